"""Steering step benchmark: latency and accuracy of the project's surrogate vs gpax viDKL and atomai dklGPR.

Survey: the digital twin's 128 x 128 HAADF; window 16 -> 12,769 candidates; target: the twin's
noise-free plasmon peak energy at each candidate; the observed set at n is a fixed random order[:n+1].

- This project (default, :func:`emedge_core.steer.default_model`, on 16 PCA scores + position): the
  ask/tell loop's latency from ``observe()`` to the next ``suggest()`` answer (rank-1 posterior update +
  UCB over every candidate) over ``--steps`` steps, with the refit running in the background and a
  simulated detector dwell of 10 ms and 100 ms between steps; refits and rank-1 updates counted;
  and the prediction error over every candidate (RMSE / std(y)) at n+1 points.
- The earlier default (DKL MLP on the PCA scores + spatial term): step seconds and RMSE, for reference.
- Peers, in their own venvs (``bash benchmarks/setup_peers_dkl.sh``), as their README loops do it, at
  the same n+1 points: a fresh model per step, gpax with 1000 SVI steps + ``predict_in_batches``,
  atomai with 200 cycles + ``predict``, on the raw 256 patch pixels; step seconds and RMSE / std(y).
  A peer whose venv is missing is skipped with a note on stderr.

    python benchmarks/dkl_step.py [--sizes 50,200,500] [--peers gpax,atomai] [--device cpu|cuda]
                                  [--survey EDGE]    # survey edge in px; 271 gives ~65k candidates (GPU figure)

Prints one JSON line per n with every figure side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import typing

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from emedge_core.acquisition import UCB  # noqa: E402
from emedge_core.dkl import DKLRegressor  # noqa: E402
from emedge_core.patches import Patches, make_patches  # noqa: E402
from emedge_core.steer import Steerer, default_model  # noqa: E402
from emedge_core.twin import DigitalTwin  # noqa: E402


def data(size: int) -> tuple[np.ndarray, Patches, np.ndarray, np.ndarray, np.ndarray]:
    """(raw features, PCA-16 patches, y, random order, survey) for a size x size twin."""
    twin = DigitalTwin(size=size, seed=0)
    raw = make_patches(twin.survey().image, 16)
    pca = make_patches(twin.survey().image, 16, components=16)
    truth = twin.truth("eels_peak_energy")
    y = truth[raw.coords[:, 0], raw.coords[:, 1]]
    order = np.random.default_rng(0).permutation(len(y))
    return raw.features, pca, y, order, twin.survey().image


def ours(x: np.ndarray, y: np.ndarray, order: np.ndarray, n: int, device: str, repeats: int = 3,
         coords: typing.Optional[np.ndarray] = None) -> dict[str, float]:
    """The earlier default (DKL): median step seconds (warm update at n+k, k=1..repeats, + full posterior)
    and the first fit; with ``coords`` the model has the spatial kernel term."""
    m = DKLRegressor(x.shape[1], device=device, seed=0)
    c = (lambda idx: coords[idx]) if coords is not None else (lambda idx: None)
    t0 = time.perf_counter()
    m.fit(x[order[:n]], y[order[:n]], coords=c(order[:n]))
    first = time.perf_counter() - t0
    steps, fits, preds = [], [], []
    for k in range(1, repeats + 1):
        t0 = time.perf_counter()
        m.fit(x[order[:n + k]], y[order[:n + k]], coords=c(order[:n + k]))
        t1 = time.perf_counter()
        post = m.posterior(x, coords=coords)
        float(post.var.max())
        t2 = time.perf_counter()
        steps.append(t2 - t0), fits.append(t1 - t0), preds.append(t2 - t1)
    rmse = float(np.sqrt(np.mean((post.mean - y) ** 2)) / y.std())
    return {"step_s": float(np.median(steps)), "update_s": float(np.median(fits)),
            "predict_s": float(np.median(preds)), "first_fit_s": first, "rmse_rel": rmse}


def ours_gp(patches: Patches, survey: np.ndarray, y: np.ndarray, order: np.ndarray, n: int, device: str,
            steps: int = 40, dwell: float = 0.0) -> dict[str, typing.Any]:
    """The default surrogate in the ask/tell loop: ``n`` points told, then ``steps`` steps of observe ->
    suggest (UCB) with the refit in the background; latency median/p95 of observe() -> suggest() answer,
    the refits and rank-1 updates made meanwhile, and the prediction error over every candidate at n+1
    (after the background refit is in)."""
    model = default_model(patches, survey, background=True, device=device)
    st = Steerer(patches, model, UCB(2.0), seeds=2, seed=0)
    pos = patches.coords[order[:n + 1]]
    t0 = time.perf_counter()
    st.observe(pos, y[order[:n + 1]])
    model.wait()
    first = time.perf_counter() - t0
    pred = st.posterior()
    assert pred is not None
    rmse = float(np.sqrt(np.mean((pred.mean - y) ** 2)) / y.std())
    kernel = model.describe()["kernel"]
    refits0, updates0 = model.refits, model.updates
    lat = []
    nxt = st.suggest()
    for _ in range(steps):
        if dwell:
            time.sleep(dwell)                 # the detector measuring; the refit runs meanwhile
        val = y[patches.lookup(nxt)]
        t0 = time.perf_counter()
        st.observe(nxt, val)
        nxt = st.suggest()
        lat.append(time.perf_counter() - t0)
    model.wait()
    return {"latency_median_s": float(np.median(lat)), "latency_p95_s": float(np.percentile(lat, 95)),
            "latency_max_s": float(np.max(lat)), "refits_during": model.refits - refits0,
            "updates_during": model.updates - updates0, "first_fit_s": first, "rmse_rel": rmse, "kernel": kernel,
            "dwell_s": dwell, "steps": steps}


def peer(name: str, path: str, sizes: list[int]) -> dict[int, dict[str, float]]:
    py = os.path.join(HERE, f".venv-{name}", "bin", "python")
    if not os.path.exists(py):
        print(f"[dkl_step] {name}: no venv at {py}; run benchmarks/setup_peers_dkl.sh", file=sys.stderr)
        return {}
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    p = subprocess.run([py, os.path.join(HERE, "dkl_peer.py"), name, path, *map(str, sizes)], capture_output=True,
                       text=True, env=env)
    if p.returncode != 0:
        print(f"[dkl_step] {name} failed:\n{p.stderr[-2000:]}", file=sys.stderr)
    out = {}
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            out[r["n"]] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,200,500")
    ap.add_argument("--peers", default="gpax,atomai")
    ap.add_argument("--device", default=None)
    ap.add_argument("--survey", type=int, default=128, help="survey edge (px); 271 gives ~65k candidates")
    ap.add_argument("--steps", type=int, default=40, help="observe -> suggest steps timed per n (default 40)")
    ap.add_argument("--dwells", default="0.01,0.1", help="simulated detector dwell per step, s (default 0.01,0.1)")
    ap.add_argument("--no-dkl", action="store_true", help="skip the earlier DKL default's figures")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    dwells = [float(d) for d in args.dwells.split(",") if d]
    raw, pca, y, order, survey = data(args.survey)
    coords = pca.coords
    device = args.device or ("cuda" if __import__("torch").cuda.is_available() else "cpu")
    peers: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dkl.npz")
        np.savez(path, X=raw, y=y, order=order)
        for name in filter(None, args.peers.split(",")):
            peers[name] = peer(name, path, sizes)
    for n in sizes:
        line: dict[str, typing.Any] = {"benchmark": "dkl_step", "n_observed": n, "n_candidates": len(y),
                                       "device": device, "loadavg_1min": round(os.getloadavg()[0], 2)}
        for dwell in dwells:
            line[f"ours_gp_dwell{int(dwell * 1000)}ms"] = ours_gp(pca, survey, y, order, n, device, args.steps, dwell)
        if not args.no_dkl:
            line["ours_dkl_pca16"] = ours(pca.features, y, order, n, device, coords=coords)
        for name, res in peers.items():
            if n in res:
                line[name] = {k: v for k, v in res[n].items() if k not in ("peer", "n")}
        line["goal"] = ("observe -> suggest <= 0.1 s at 12,769 candidates on 2 CPU cores (p95 <= 3x median), "
                        "<= 50 ms at 65,536 on a GPU; rmse_rel = RMSE over all candidates / std(y), same n as peers")
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
