"""The DKL loop's batches of q probe positions through nionswift-instrumentation's synchronized scan
(issue 15, item 1), on nionswift-usim: ``SwiftInstrument(batch_scan=True)`` measures a batch with one
line sub-scan of the survey grid per survey row it touches (``grab_synchronized``, as ``scan_rows``).

The reference is a whole synchronized scan of the survey grid (``scan_rows``): usim's spectra are
repeatable to ~3e-5, and its flake has sharp material edges, so a sub-scan one pixel off is caught.
nionswift-usim 5.4's synchronized frames lag the probe by one pixel along the fast axis (its camera
advances the scan pixel before it simulates the frame: ``CameraDevice.__direct_acquire``), so frame c of
a scan line shows pixel c + 1 - the same in a whole scan and in a line sub-scan - and the last frame of a
line shows where the probe goes after the line, which differs between the two: those are not compared.
"""
from __future__ import annotations

import typing

import numpy as np
import pytest

pytest.importorskip("nionswift_plugin.usim")

from emedge_core.experiment import Experiment, ExperimentConfig  # noqa: E402
from emedge_core.instrument import Frames  # noqa: E402
from nionswift_plugin.emedge.swift_instrument import SwiftInstrument, UsimSession  # noqa: E402

N = 16                    # survey edge (px)
LOSS = slice(40, None)    # channels above 20 eV (the axis starts at -20 eV, 1 eV per channel): no zero-loss peak


@pytest.fixture(scope="module")
def usim() -> typing.Iterator[tuple[UsimSession, np.ndarray]]:
    """The simulator and its whole N x N synchronized SI, (N, N, 512)."""
    with UsimSession() as session:
        inst = session.instrument("spectrum", survey_px=N, exposure_ms=5)
        inst.survey()
        rows: dict[int, np.ndarray] = {}
        assert inst.scan_rows((N, N), lambda r, got: rows.__setitem__(r, got.data)) == N
        yield session, np.stack([rows[r] for r in range(N)])


def _counting(inst: SwiftInstrument) -> list[tuple[int, int]]:
    """Record the shape of every synchronized grab ``inst`` makes."""
    grabs: list[tuple[int, int]] = []
    grab = inst._grab

    def counted(fp: typing.Any, shape: tuple[int, int], on_row: typing.Callable[[int, Frames], None]) -> int:
        grabs.append(shape)
        return grab(fp, shape, on_row)
    inst._grab = counted           # type: ignore[method-assign]
    return grabs


def test_a_batch_by_line_subscans_gives_the_frames_of_its_pixels(usim: tuple[UsimSession, np.ndarray]) -> None:
    session, full = usim
    loss = full[..., LOSS].sum(-1)
    edge = np.zeros((N, N), bool)                   # pixels with a neighbour of another material
    edge[:, :-1] |= np.abs(np.diff(loss, axis=1)) > 5e6
    edge[:, 1:] |= np.abs(np.diff(loss, axis=1)) > 5e6
    edge[:-1] |= np.abs(np.diff(loss, axis=0)) > 5e6
    edge[1:] |= np.abs(np.diff(loss, axis=0)) > 5e6
    rng = np.random.default_rng(3)
    rows = rng.permutation([r for r in range(N) if edge[r, 1:N - 2].any()])[:6]
    inner = np.array([[r, 1 + rng.choice(np.flatnonzero(edge[r, 1:N - 2]))] for r in rows])
    assert len(inner) == 6
    for shift in ([0, 1], [0, -1], [1, 0], [-1, 0]):   # the test can tell a sub-scan one pixel off
        moved = np.clip(inner + shift, 0, N - 1)
        assert not np.allclose(loss[moved[:, 0], moved[:, 1]], loss[inner[:, 0], inner[:, 1]], rtol=0.05, atol=1e6)
    r0, c0 = inner[0]                   # one more on the first row: a line of 4 pixels, whose last frame
    pos = np.vstack([inner, [[r0, min(c0 + 3, N - 1)]]])   # is not compared (see the module doc)
    inst = SwiftInstrument(session.stem, "spectrum", survey_px=N, exposure_ms=5, batch_scan=True)
    inst.survey()
    grabs = _counting(inst)
    got = inst.measure(pos)
    assert got.data.shape == (len(pos), 512) and got.kind == "spectrum"
    assert got.energy_eV is not None and got.energy_eV[0] == pytest.approx(-20.0)
    assert sorted(grabs) == sorted([(1, 2)] * 5 + [(1, min(c0 + 3, N - 1) - c0 + 1)])   # one line per row
    np.testing.assert_allclose(got.data[:6, LOSS].sum(-1), loss[inner[:, 0], inner[:, 1]], rtol=1e-3, atol=1e5)
    np.testing.assert_allclose(got.data[:6], full[inner[:, 0], inner[:, 1]], rtol=1e-3, atol=200)   # readout noise


def test_dkl_loop_measures_its_batches_by_synchronized_scans(usim: tuple[UsimSession, np.ndarray]) -> None:
    session, full = usim
    inst = SwiftInstrument(session.stem, "spectrum", survey_px=N, exposure_ms=5, batch_scan=True)
    grabs = _counting(inst)
    cfg = ExperimentConfig(budget=10, seeds=4, batch=3, window=6, components=8, seed=1,
                           model={"kind": "dkl", "iters": 30})
    result = Experiment(inst, {"name": "eels_band_integral", "band_eV": [20, 120]}, cfg).run()
    assert result.stopped_by == "budget" and len(result.values) == 10
    assert len(grabs) >= 3 and all(h == 1 for h, _ in grabs)          # every batch through line sub-scans
    pos = np.asarray(result.positions)
    batches = np.split(pos, result.step_measured[:-1])                  # the loop's batches, in order
    assert sum(len(b) for b in batches) == 10 and max(len(b) for b in batches) <= 4
    assert len(grabs) == sum(len(set(b[:, 0].tolist())) for b in batches)   # one line per row of each batch
    assert result.frames.shape == (10, 512) and np.isfinite(result.values).all()
    assert np.isfinite(result.prediction).any()
