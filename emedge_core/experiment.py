"""The closed loop: survey -> patches -> (suggest -> measure -> scalarize -> observe)* -> result.

:class:`Experiment` drives any instrument, scalarizer, steerer and stopping rules. With
``drift_every`` it re-takes the survey now and then and sends the probe where the specimen has
drifted to (:mod:`emedge_core.drift`); the first frames are checked against the instrument's
stated calibration (:mod:`emedge_core.consistency`) and any disagreement is kept and warned. It
calls ``callback(step)`` after every step (Swift panels hang their live maps there), can
be paused, resumed and stopped from another thread, and returns an
:class:`ExperimentResult` holding everything a file needs.
"""
from __future__ import annotations

import dataclasses
import datetime
import inspect
import threading
import time
import typing
import warnings

import numpy as np

from emedge_core import EmedgeError, __version__, consistency
from emedge_core.acquisition import make_acquisition
from emedge_core.dkl import DKLRegressor
from emedge_core.drift import DriftTracker
from emedge_core.gp import STRUCTURES
from emedge_core.instrument import Frames, Instrument, Survey
from emedge_core.patches import make_patches
from emedge_core.prediction import Prediction
from emedge_core.scalarize import Reducer, Scalarizer, from_spec
from emedge_core.steer import Steerer, Surrogate, default_model
from emedge_core.stopping import Budget, Predictability, StoppingRule, Uncertainty, first_fired


_DKL_KNOBS = frozenset(inspect.signature(DKLRegressor).parameters) - {"n_features", "spatial", "device", "seed"}


@dataclasses.dataclass
class ExperimentConfig:
    """Every knob of a run (all recorded in the result file).

    budget: measurements in all, seeds and failures included; seeds: random first points;
    batch: points per step (q); acquisition + acquisition_params: the policy; window: patch
    edge (px); patch_mode: "restrict" or "reflect"; components: PCA scores per patch fed to the
    network (None = all W*W pixels); seed: makes the run repeatable;
    travel: travel-distance penalty; stop_uncertainty: stop when the largest std of the predicted scalar < this
    (scalar units); stop_predictability: (k, tolerance) - stop when the last k were predicted
    within tolerance; model: the surrogate - ``{"kind": "gp"}`` (the default:
    :func:`~emedge_core.steer.default_model`; ``"spatial": False`` keeps only the patch-feature
    kernel, ``"background": False`` refits in line, deterministic) or ``{"kind": "dkl", ...}`` with
    keyword arguments of :class:`~emedge_core.dkl.DKLRegressor`; without "kind", any DKLRegressor
    keyword (other than spatial) means "dkl";
    drift_every: re-take the survey every this many steps, measure the specimen drift against the
    first survey and move every later probe position by it (None: never);
    dwell_s: seconds the detector dwells per position, added to each measurement (a simulated
    detector's pace, for the instrument-idle figures; 0 = the instrument's own).
    """

    budget: int = 100
    seeds: int = 10
    batch: int = 1
    acquisition: str = "ucb"
    acquisition_params: dict[str, typing.Any] = dataclasses.field(default_factory=dict)
    window: int = 16
    patch_mode: str = "restrict"
    components: typing.Optional[int] = 16
    seed: int = 0
    travel: float = 0.0
    stop_uncertainty: typing.Optional[float] = None
    stop_predictability: typing.Optional[tuple[int, float]] = None
    model: dict[str, typing.Any] = dataclasses.field(default_factory=dict)
    drift_every: typing.Optional[int] = None
    dwell_s: float = 0.0

    def __post_init__(self) -> None:
        """Check every knob once, here, for the CLI, the Swift console, the remote server and the panels
        alike: a one-line :class:`EmedgeError` that names the knob (CLI flag: ``--`` + name with dashes)."""
        def whole(name: str, low: int, value: typing.Any) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise EmedgeError(f"{name} must be >= {low} (a whole number), not {value!r}")

        whole("budget", 1, self.budget)
        whole("seeds", min(2, self.budget), self.seeds)
        if self.seeds > self.budget:
            raise EmedgeError(f"seeds ({self.seeds}) exceed the budget ({self.budget})")
        whole("batch", 1, self.batch)
        whole("window", 1, self.window)
        if self.components is not None:
            whole("components", 1, self.components)
        if self.drift_every is not None:
            whole("drift_every", 1, self.drift_every)
        if self.patch_mode not in ("restrict", "reflect"):
            raise EmedgeError(f"patch_mode must be 'restrict' or 'reflect', not {self.patch_mode!r}")
        from emedge_core.choices import POLICIES

        if self.acquisition not in POLICIES:
            raise EmedgeError(f"acquisition must be one of {', '.join(POLICIES)}, not {self.acquisition!r}")
        for name in ("travel", "dwell_s"):
            if not float(getattr(self, name)) >= 0:
                raise EmedgeError(f"{name} must be >= 0, not {getattr(self, name)!r}")
        if self.stop_uncertainty is not None and not float(self.stop_uncertainty) > 0:
            raise EmedgeError(f"stop_uncertainty must be > 0 (scalar units), not {self.stop_uncertainty!r}")
        if self.stop_predictability is not None:
            k, tol = self.stop_predictability
            if int(k) < 1 or not float(tol) >= 0:
                raise EmedgeError(f"stop_predictability wants K >= 1 and TOL >= 0, not {k}:{tol}")
        self.model_kind()

    def model_kind(self) -> str:
        """"gp" or "dkl" (see ``model``)."""
        kind = self.model.get("kind")
        if kind is None:                     # a config naming DKL knobs (runs recorded before "kind") is DKL
            kind = "dkl" if set(self.model) & _DKL_KNOBS else "gp"
        if kind not in ("gp", "dkl"):
            raise EmedgeError(f"model kind must be 'gp' or 'dkl', not {kind!r}")
        return str(kind)

    def rules(self) -> list[StoppingRule]:
        rules: list[StoppingRule] = [Budget(self.budget)]
        if self.stop_uncertainty is not None:
            rules.append(Uncertainty(float(self.stop_uncertainty)))
        if self.stop_predictability is not None:
            k, tol = self.stop_predictability
            rules.append(Predictability(int(k), float(tol)))
        return rules


#: the :class:`~emedge_core.prediction.Prediction` bounds kept as maps in :attr:`ExperimentResult.intervals`
INTERVALS = ("lower", "upper", "predictive_lower", "predictive_upper")


@dataclasses.dataclass(frozen=True)
class Step:
    """One loop step, handed to the callback. positions (q, 2); values (q,) NaN = failed."""

    index: int
    positions: np.ndarray
    values: np.ndarray
    reasons: np.ndarray
    seconds: float
    n_measured: int
    budget: int
    posterior: typing.Optional[Prediction]     # scalar units: .mean, .std, .lower, .upper (N,)
    steerer: Steerer


@dataclasses.dataclass
class ExperimentResult:
    """Everything a run produced; maps are (H, W) survey-sized with NaN off the candidates."""

    survey: Survey
    config: ExperimentConfig
    scalarizer: dict[str, typing.Any]
    signal_kind: str
    positions: np.ndarray        # (n, 2) int, measured order, seeds included
    values: np.ndarray           # (n,) float64, NaN = failed
    reasons: np.ndarray          # (n,) uint8 reason codes (emedge_core.scalarize.Reason)
    frames: np.ndarray           # (n, *sig) the raw frames
    frame_axis: dict[str, typing.Any]   # energy_eV or mrad_per_px
    prediction: np.ndarray
    uncertainty: np.ndarray
    step_seconds: list[float]
    max_std: list[float]         # per step (NaN before the model exists)
    stopped_by: str
    instrument_state: dict[str, typing.Any]
    n_candidates: int
    version: str = __version__
    step_measured: list[int] = dataclasses.field(default_factory=list)   # measurements made by each step's end
    probe_positions: typing.Optional[np.ndarray] = None   # (n, 2) int where the probe went (positions + drift)
    drift: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4)))   # (k, 4) n, dy px, dx px, s
    findings: list[dict[str, typing.Any]] = dataclasses.field(default_factory=list)   # metadata the frames contradict
    decide_seconds: list[float] = dataclasses.field(default_factory=list)   # per step: observe -> next suggest
    measure_seconds: list[float] = dataclasses.field(default_factory=list)  # per step: the instrument measuring
    model: dict[str, typing.Any] = dataclasses.field(default_factory=dict)  # kernel, hyper-parameters, LOO coverage
    resolved: dict[str, typing.Any] = dataclasses.field(default_factory=dict)   # scalarizer geometry every step used
    measured_s: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))   # (n,) s from the start, per frame
    started_utc: str = ""                                                    # ISO time the run started
    timeline: list[dict[str, typing.Any]] = dataclasses.field(default_factory=list)   # state changes, see _changes
    #: (H, W) maps of the final 95 % intervals: "lower"/"upper" of the scalar itself (latent),
    #: "predictive_lower"/"predictive_upper" of one new measurement (latent + noise); empty without a model
    intervals: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, typing.Any]:
        """The JSON contract of ``emedge run --json`` (and summary.json)."""
        ok = np.isfinite(self.values)
        best = int(np.nanargmax(np.where(ok, self.values, -np.inf))) if ok.any() else None
        return {
            "positions": self.positions.tolist(),
            "scalars": [float(v) if np.isfinite(v) else None for v in self.values],
            "stopped_by": self.stopped_by,
            "seconds_per_step_median": float(np.median(self.step_seconds)) if self.step_seconds else 0.0,
            "seconds_per_step_p95": float(np.percentile(self.step_seconds, 95)) if self.step_seconds else 0.0,
            "decision_seconds_median": float(np.median(self.decide_seconds)) if self.decide_seconds else 0.0,
            "decision_seconds_p95": float(np.percentile(self.decide_seconds, 95)) if self.decide_seconds else 0.0,
            "instrument_idle_fraction": (float(sum(self.decide_seconds) / (sum(self.decide_seconds)
                                                                            + sum(self.measure_seconds)))
                                         if self.decide_seconds and sum(self.measure_seconds) > 0 else None),
            "dwell_s": self.config.dwell_s,
            "model": self.model.get("kernel"),
            "loo_coverage": self.model.get("loo_coverage"),
            "n_candidates": self.n_candidates,
            "n_measured": int(len(self.values)),
            "n_failed": int((~ok).sum()),
            "best_position": self.positions[best].tolist() if best is not None else None,
            "best_value": float(self.values[best]) if best is not None else None,
            "scalarizer": self.scalarizer,
            "acquisition": self.config.acquisition,
            "version": self.version,
            "drift_px": self.drift[-1, 1:3].tolist() if len(self.drift) else None,
            "findings": self.findings,
            "resolved": self.resolved,
        }


def make_steerer(image: np.ndarray, config: ExperimentConfig,
                 available: typing.Optional[np.ndarray] = None) -> Steerer:
    """The candidates (patches of the survey ``image`` (H, W)), model and policy of a run with ``config``;
    ``available`` (H, W) bool limits the candidates. :meth:`Experiment.run` steers with it and the
    cluster retrain (:func:`emedge_core.jobs.retrain`) refits it, so both fit the same way."""
    cfg = config
    patches = make_patches(image, cfg.window, cfg.patch_mode, available,
                           cfg.components if cfg.model.get("extractor", "mlp") == "mlp" else None)
    model: typing.Union[Surrogate, DKLRegressor]
    if cfg.model_kind() == "gp":
        structures = STRUCTURES if cfg.model.get("spatial", True) else ("pca",)
        model = default_model(patches, image, background=bool(cfg.model.get("background", True)),
                              structures=structures, warp=str(cfg.model.get("warp", "auto")))
    else:
        kw = {k: v for k, v in cfg.model.items() if k != "kind"}
        model = DKLRegressor(patches.features.shape[1], window=cfg.window, seed=cfg.seed, **kw)
    acquisition = make_acquisition(cfg.acquisition, **cfg.acquisition_params)
    return Steerer(patches, model, acquisition, seeds=cfg.seeds, batch=cfg.batch, travel=cfg.travel,
                   seed=cfg.seed)


class Experiment:
    """A closed-loop autonomous experiment on ``instrument`` with ``scalarizer``."""

    def __init__(self, instrument: Instrument, scalarizer: typing.Union[str, dict[str, typing.Any], Scalarizer],
                 config: typing.Optional[ExperimentConfig] = None) -> None:
        self.instrument = instrument
        self.scalarizer = from_spec(scalarizer)
        self.config = config or ExperimentConfig()
        if self.scalarizer.signal_kind != instrument.signal_kind:
            raise EmedgeError(f"scalarizer {self.scalarizer.name!r} reduces {self.scalarizer.signal_kind} frames "
                              f"but the instrument gives {instrument.signal_kind} frames")
        if len(self.scalarizer.components) != 1:
            raise EmedgeError(f"scalarizer {self.scalarizer.name!r} gives {len(self.scalarizer.components)} numbers "
                              "per position; steering needs one")
        if self.scalarizer.map_level:
            raise EmedgeError(f"scalarizer {self.scalarizer.name!r} needs the whole scan map at once; "
                              "steering needs a value per position as it is measured")
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self.steerer: typing.Optional[Steerer] = None

    # -- control from other threads ---------------------------------------------------
    def stop(self) -> None:
        """Finish after the step in progress; an instrument that can ``cancel()`` ends its batch
        between two frames, and the step keeps the frames it took."""
        self._stop.set()
        self._running.set()
        cancel = getattr(self.instrument, "cancel", None)
        if cancel is not None:
            cancel()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    # -- the loop ------------------------------------------------------------------------
    def run(self, callback: typing.Optional[typing.Callable[[Step], None]] = None,
            progress: bool = False) -> ExperimentResult:
        """Run until a stopping rule fires (or :meth:`stop`); ``progress`` draws a bar on stderr."""
        cfg = self.config
        survey = self.instrument.survey()
        steerer = self.steerer = make_steerer(survey.image, cfg, self.instrument.available())
        patches = steerer.patches
        if cfg.budget > len(patches):
            raise EmedgeError(f"budget {cfg.budget} is larger than the {len(patches)} candidate positions")
        rules = cfg.rules()
        # the random baseline needs the model only for the final maps, unless someone watches
        needs_model = cfg.acquisition != "random" or callback is not None or len(rules) > 1
        reducer = Reducer(self.scalarizer)   # prepared once, on the first good frames; fixed for the run
        state = self.instrument.state()
        started_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        flat = _flatten(state)
        measured_s: list[float] = []
        timeline: list[dict[str, typing.Any]] = []
        tracker = DriftTracker(survey.image) if cfg.drift_every else None
        findings: list[dict[str, typing.Any]] = []
        probes: list[np.ndarray] = []
        frames: list[np.ndarray] = []
        reasons: list[np.ndarray] = []
        axis: dict[str, typing.Any] = {}
        step_seconds: list[float] = []
        step_measured: list[int] = []
        decide: list[float] = []
        measure_s: list[float] = []
        t_told: typing.Optional[float] = None
        max_std: list[float] = []
        stopped_by = "stopped"
        bar = _progress(cfg.budget, progress)
        started = time.perf_counter()
        try:
            step = 0
            while True:
                fired = first_fired(rules, steerer.history())
                if fired:
                    stopped_by = fired
                    break
                self._running.wait()
                if self._stop.is_set():
                    break
                t0 = time.perf_counter()
                left = cfg.budget - len(steerer.order)
                positions = steerer.suggest(min(cfg.batch, left) if not steerer.seeding else
                                            min(cfg.seeds - len(steerer.good), left))
                if len(positions) == 0:
                    stopped_by = "budget"
                    break
                t_asked = time.perf_counter()
                probe = positions
                if tracker is not None:
                    if step > 0 and step % typing.cast(int, cfg.drift_every) == 0:
                        tracker.update(self.instrument.survey().image, len(steerer.order),
                                       time.perf_counter() - started)
                    probe = tracker.correct(positions, survey.shape)
                t_m = time.perf_counter()
                measured = self.instrument.measure(probe)
                if len(measured) < len(positions):   # cancelled mid-batch: the step keeps what was measured
                    positions, probe = positions[:len(measured)], probe[:len(measured)]
                if cfg.dwell_s > 0:
                    time.sleep(cfg.dwell_s * len(probe))
                measure_s.append(time.perf_counter() - t_m)
                t_done = time.perf_counter() - started
                measured_s.extend([t_done] * len(measured))
                n_now = len(steerer.order) + len(measured)
                now_state = self.instrument.state()      # the state hook: once per step, kept where it changed
                now = _flatten(now_state)
                changed = _changes(flat, now)
                if changed:
                    timeline.append({"n": n_now, "s": t_done, "changed": changed})
                    flat = now
                if step == 0 or changed:      # the metadata checks follow the state over the whole run
                    seen = {f["key"] for f in findings}
                    findings += [f | {"n": n_now} for f in _check(measured, now_state) if f["key"] not in seen]
                result = reducer.frames(measured)
                probes.append(np.asarray(probe, np.int64))
                if t_told is not None:       # the previous observe -> this suggest's answer
                    decide.append(t_asked - t_told)
                t_told = time.perf_counter()
                steerer.observe(positions, result.values)
                frames.append(np.asarray(measured.data))
                reasons.append(result.reason)
                if not axis:
                    axis = ({"energy_eV": measured.energy_eV} if measured.energy_eV is not None
                            else {"mrad_per_px": measured.mrad_per_px})
                post = steerer.posterior(wait=False) if needs_model and not steerer.seeding else None
                seconds = time.perf_counter() - t0
                step_seconds.append(seconds)
                step_measured.append(len(steerer.order))
                max_std.append(float(post.std.max()) if post is not None else np.nan)
                bar.update(len(positions))
                if callback is not None:
                    callback(Step(step, positions, result.values, result.reason, seconds, len(steerer.order),
                                  cfg.budget, post, steerer))
                step += 1
        finally:
            bar.close()
        steerer.model.wait()
        post = steerer.posterior()
        h, w = survey.shape
        nan_map = np.full((h, w), np.nan)
        order = np.asarray(steerer.order, dtype=np.int64)
        return ExperimentResult(
            survey=survey, config=cfg, scalarizer=self.scalarizer.params(), signal_kind=self.instrument.signal_kind,
            positions=patches.coords[order] if len(order) else np.zeros((0, 2), np.int64),
            values=np.asarray(steerer.values, dtype=np.float64),
            reasons=np.concatenate(reasons) if reasons else np.zeros(0, np.uint8),
            frames=np.concatenate(frames) if frames else np.zeros((0,)),
            frame_axis=axis,
            prediction=patches.to_map(post.mean) if post is not None else nan_map,
            uncertainty=patches.to_map(post.std) if post is not None else nan_map.copy(),
            step_seconds=step_seconds, max_std=max_std, stopped_by=stopped_by,
            instrument_state=state, n_candidates=len(patches), step_measured=step_measured,
            probe_positions=np.concatenate(probes) if probes else np.zeros((0, 2), np.int64),
            resolved=reducer.resolved, drift=tracker.as_array() if tracker is not None else np.zeros((0, 4)),
            findings=findings,
            decide_seconds=decide, measure_seconds=measure_s, model=steerer.model.describe(),
            measured_s=np.asarray(measured_s, np.float64), started_utc=started_utc, timeline=timeline,
            intervals={k: patches.to_map(getattr(post, k)) for k in INTERVALS} if post is not None else {})


def _flatten(state: dict[str, typing.Any], prefix: str = "") -> dict[str, typing.Any]:
    """``state`` with nested dicts as dotted keys ({"stage": {"x_m": 1}} -> {"stage.x_m": 1})."""
    out: dict[str, typing.Any] = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v.tolist() if hasattr(v, "tolist") else list(v) if isinstance(v, tuple) else v
    return out


def _changes(before: dict[str, typing.Any], after: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """The keys of the flat state ``after`` whose value differs from ``before`` (None: key gone)."""
    out = {k: v for k, v in after.items() if k not in before or before[k] != v}
    return out | {k: None for k in before if k not in after}


def _check(frames: Frames, state: dict[str, typing.Any]) -> list[dict[str, typing.Any]]:
    """The consistency findings on the first frames, each also raised as a warning."""
    out = []
    for finding in consistency.check(frames, state):
        warnings.warn(f"metadata disagrees with the data: {finding.message}", RuntimeWarning, stacklevel=3)
        out.append(finding.as_dict())
    return out


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> typing.Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="pt", desc="emedge run", dynamic_ncols=True)
