"""``emedge run``: a closed-loop autonomous experiment on the twin or a replay file.

    emedge run --instrument twin|replay [--data FILE] --scalarizer SPEC --budget N [--seeds K]
               [--batch Q] [--acquisition ucb|ei|maxvar|thompson|random] [--window W] [--seed S]
               --out DIR [--json]   (and the options below, e.g. --no-spatial)

Writes DIR/experiment.h5, DIR/summary.json and DIR/maps.png; a progress bar goes to stderr;
with --json the last stdout line is the summary object. Measurements that gave no value are counted
by reason on stderr (saturated frames name the ``saturation`` option); the exit status is 1 when none
gave a value (the files are written all the same).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from emedge_core import EmedgeError
from emedge_core.choices import POLICIES
from emedge_core.instrument import InstrumentOptions, instrument_factories, open_instrument


def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run", help="run a closed-loop DKL experiment", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instrument", choices=sorted(instrument_factories()), default="twin",
                   help="twin: the seeded digital twin (default); replay: frames from --data; "
                        "others come from installed plug-ins (usim: nionswift-usim through Swift's instrumentation)")
    p.add_argument("--data", help="replay file (.npz or HDF5 with survey, data[, energy_eV])")
    p.add_argument("--signal", choices=("spectrum", "diffraction"), default=None,
                   help="twin only: EELS spectra or 4D-STEM patterns (default: from the scalarizer)")
    p.add_argument("--scalarizer", default="eels_peak_energy",
                   help='a name or a JSON object {"name": ..., <params>} (default eels_peak_energy)')
    p.add_argument("--budget", type=int, default=100, help="measurements in all, seeds included (default 100)")
    p.add_argument("--seeds", type=int, default=10, help="random seed points before the model steers (default 10)")
    p.add_argument("--batch", type=int, default=1, help="points per step (default 1)")
    p.add_argument("--acquisition", default="ucb", choices=POLICIES)
    p.add_argument("--beta", type=float, default=2.0, help="UCB exploration weight (default 2)")
    p.add_argument("--window", type=int, default=None,
                   help="patch edge in survey px (default 16; smaller on a small survey, see below)")
    p.add_argument("--components", type=int, default=None,
                   help="PCA scores per patch fed to the model (default 16, at most window^2)")
    p.add_argument("--patch-mode", choices=("restrict", "reflect"), default=None,
                   help="restrict: only pixels whose whole window fits are candidates (default); reflect: every "
                        "pixel, the survey mirrored at its edges. Without --window/--components/--patch-mode a "
                        "small survey (e.g. a 49x6 SI) gets a window and components that leave at least half the "
                        "scan as candidates; the choice is printed to stderr and kept in the summary")
    p.add_argument("--dataset", default=None,
                   help="replay: the signal of a file holding several (title or index; see emedge inspect FILE)")
    p.add_argument("--survey", default=None, metavar="IMAGE",
                   help="replay: a HAADF/ADF image of the scan (at its grid or a whole multiple, binned); default: "
                        "an image in the same file, else the summed signal")
    p.add_argument("--seed", type=int, default=0, help="random seed of everything (default 0)")
    p.add_argument("--travel", type=float, default=0.0, help="travel-distance penalty weight (default 0 = none)")
    p.add_argument("--stop-uncertainty", type=float, default=None, metavar="STD",
                   help="also stop when the largest std of the predicted scalar falls below STD (scalar units)")
    p.add_argument("--stop-predictability", default=None, metavar="K:TOL",
                   help="also stop when the last K measurements were predicted within TOL")
    p.add_argument("--model", choices=("gp", "dkl"), default=None,
                   help="surrogate: gp = exact GP on PCA patch features and probe position, kernel and log warp "
                        "chosen by leave-one-out score, refitted in the background (default); dkl = deep kernel "
                        "learning, refitted every step (default when --extractor cnn or --retrain is given)")
    p.add_argument("--dwell", type=float, default=0.0, metavar="S",
                   help="add S seconds of detector dwell per position (a simulated pace for the idle figures)")
    p.add_argument("--retrain", action="store_true", help="dkl: refit the model from scratch every step")
    p.add_argument("--extractor", choices=("mlp", "cnn"), default="mlp",
                   help="DKL feature extractor: mlp on 16 PCA scores per patch (default, fastest) or a small "
                        "CNN on the raw patch (shift-tolerant, ~5x slower per step)")
    p.add_argument("--no-spatial", dest="spatial", action="store_false",
                   help="drop the spatial kernel term: the GP then sees only the learned patch embedding, not "
                        "where the probe was (by default it adds a kernel on the probe position, so a high "
                        "value raises the prediction at its neighbours)")
    p.add_argument("--spatial-lengthscale", type=float, default=4.0, metavar="PX",
                   help="starting lengthscale of the spatial term in survey px, free within PX/2..2*PX (default 4)")
    p.add_argument("--drift-every", type=int, default=None, metavar="N",
                   help="re-take the survey every N steps, measure the specimen drift against the first survey "
                        "and move every later probe position by it (default: never)")
    p.add_argument("--drift", default=None, metavar="DY,DX",
                   help="twin only: the specimen drifts DY,DX survey px per measured frame (default 0,0)")
    p.add_argument("--size", type=int, default=128, help="twin only: survey edge in px (default 128)")
    p.add_argument("--dose", type=float, default=2e4, help="twin only: electrons per frame (default 2e4)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    p.set_defaults(func=run)


def _model(args: argparse.Namespace) -> dict[str, typing.Any]:
    """The run's model settings from the options (see ExperimentConfig.model)."""
    kind = args.model or ("dkl" if args.extractor != "mlp" or args.retrain else "gp")
    if kind == "gp":
        if args.extractor != "mlp" or args.retrain:
            raise EmedgeError("--extractor and --retrain apply to --model dkl")
        return {"kind": "gp", "spatial": args.spatial}
    return {"kind": "dkl", "retrain": args.retrain, "extractor": args.extractor, "spatial": args.spatial,
            "spatial_lengthscale": args.spatial_lengthscale}


def _patch_choice(args: argparse.Namespace, instrument: typing.Any, scalarizer: typing.Any) -> typing.Any:
    """Window, patch mode and components for this survey (small surveys adapt, :func:`fit_to_survey`);
    the energy windows of EELS scalarizers are checked against the instrument's axis here, before
    anything is measured. What was adapted goes to stderr."""
    from emedge_core.consistency import check_energy_windows
    from emedge_core.patches import PatchChoice, fit_to_survey

    if scalarizer.signal_kind == "spectrum":
        check_energy_windows(scalarizer, getattr(instrument, "energy_eV", None))
    window = 16 if args.window is None else args.window
    components = 16 if args.components is None else args.components
    mode = args.patch_mode or "restrict"
    if window < 1 or components < 1:
        raise EmedgeError(f"--{'window' if window < 1 else 'components'} must be >= 1")
    shape = instrument.survey().shape if args.instrument == "replay" else \
        (args.size, args.size) if args.instrument == "twin" else None     # other instruments: survey not taken yet
    if shape is None:
        return PatchChoice(window, mode, components, -1)
    choice = fit_to_survey(shape, window, components, mode,
                           fixed=(args.window is not None, args.components is not None, args.patch_mode is not None))
    if choice.note:
        print(f"emedge: {choice.note}", file=sys.stderr)
    return choice


def _predictability(text: typing.Optional[str]) -> typing.Optional[tuple[int, float]]:
    if text is None:
        return None
    try:
        k, tol = text.split(":")
        return int(k), float(tol)
    except ValueError:
        raise EmedgeError(f"--stop-predictability wants K:TOL (e.g. 5:0.2), not {text!r}") from None


def _pair(text: typing.Optional[str], flag: str) -> tuple[float, float]:
    if text is None:
        return (0.0, 0.0)
    try:
        dy, dx = (float(v) for v in text.split(","))
        return dy, dx
    except ValueError:
        raise EmedgeError(f"{flag} wants DY,DX (e.g. 0.02,-0.01), not {text!r}") from None


#: ExperimentConfig knobs whose command-line flag is not ``--`` + the name with dashes
_FLAGS = {"dwell_s": "--dwell", "acquisition_params": "--beta"}


def _config(cls: typing.Any, **knobs: typing.Any) -> typing.Any:
    """``cls(**knobs)``; the config checks itself, and its one-line error is given with the flag to change."""
    try:
        return cls(**knobs)
    except EmedgeError as e:
        name, _, rest = str(e).partition(" ")
        if name in knobs:
            raise EmedgeError(f"{_FLAGS.get(name, '--' + name.replace('_', '-'))} {rest}") from None
        raise


def run(args: argparse.Namespace) -> int:
    from emedge_core.experiment import Experiment, ExperimentConfig
    from emedge_core.experiment_file import write_experiment
    from emedge_core.scalarize import from_spec

    scalarizer = from_spec(args.scalarizer)
    instrument = open_instrument(args.instrument, InstrumentOptions(
        signal_kind=args.signal or scalarizer.signal_kind, size=args.size, seed=args.seed, dose=args.dose,
        drift_px_per_frame=_pair(args.drift, "--drift"), data=args.data, dataset=getattr(args, "dataset", None),
        survey=getattr(args, "survey", None)))
    choice = _patch_choice(args, instrument, scalarizer)
    if not args.spatial_lengthscale > 0:
        raise EmedgeError("--spatial-lengthscale must be > 0")
    config = _config(
        ExperimentConfig, budget=args.budget, seeds=min(args.seeds, args.budget), batch=args.batch,
        acquisition=args.acquisition,
        acquisition_params={"beta": args.beta} if args.acquisition == "ucb" else {}, window=choice.window,
        patch_mode=choice.mode, components=choice.components,
        seed=args.seed, travel=args.travel, stop_uncertainty=args.stop_uncertainty,
        stop_predictability=_predictability(args.stop_predictability),
        model=_model(args), drift_every=args.drift_every, dwell_s=args.dwell)
    try:
        result = Experiment(instrument, scalarizer, config).run(progress=True)
    finally:
        close = getattr(instrument, "close", None)    # replay files, simulator sessions
        if close is not None:
            close()
    paths = write_experiment(result, args.out)
    summary = result.summary()
    if args.json:
        from emedge_core.cli import print_json

        print_json(summary | {"files": paths, "patches": dataclasses.asdict(choice)})
    else:
        print(f"{summary['n_measured']} measured ({summary['n_failed']} failed), stopped by {summary['stopped_by']}, "
              f"median step {summary['seconds_per_step_median']:.3f} s; best {summary['best_value']} at "
              f"{summary['best_position']}; wrote {paths['h5']}, {paths['summary']}, {paths['maps']}")
        if summary["drift_px"] is not None:
            print(f"specimen drift at the end: ({summary['drift_px'][0]:+.2f}, {summary['drift_px'][1]:+.2f}) px")
    for finding in summary["findings"]:
        print(f"emedge: warning: metadata disagrees with the data: {finding['message']}", file=sys.stderr)
    return _failures(result.reasons, scalarizer.saturation, result.frames.dtype)


def _failures(reasons: typing.Any, saturation: typing.Optional[float], dtype: typing.Any) -> int:
    """Warn (stderr) when measurements gave no value (``reasons``: (n,) uint8 Reason codes), by reason,
    naming the level and the option when most were saturated (``saturation``: the scalarizer's, of
    ``dtype`` frames); the exit status: 1 when none gave a value (the files are written all the same),
    else 0."""
    from emedge_core.commands import saturated_hint
    from emedge_core.scalarize import reason_counts

    bad = {k: v for k, v in reason_counts(reasons).items() if v}
    if not bad:
        return 0
    n_bad, n = sum(bad.values()), len(reasons)
    hint = saturated_hint(saturation, dtype) if max(bad, key=lambda k: bad[k]) == "saturated" else ""
    print(f"emedge: warning: {n_bad} of {n} measurements gave no value "
          f"({', '.join(f'{v} {k}' for k, v in bad.items())}){hint}", file=sys.stderr)
    return 1 if n_bad == n else 0
