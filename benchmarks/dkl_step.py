"""DKL step benchmark: seconds per active-learning step vs gpax viDKL and atomai dklGPR.

Survey: the digital twin's 128 x 128 HAADF; window 16 -> 12,769 candidates x 256 features;
target: the twin's noise-free plasmon peak energy at each candidate. At n = 50/200/500 observed
points one step = update the model with one more point + predict mean and variance over every
candidate. This project: warm start (``warm_iters`` Adam steps from the previous state) plus the
closed-form posterior, on the raw 256 features and on the default 16 PCA scores, both with the
default spatial kernel term on the probe coordinates (and PCA without it, for reference). Peers, in their own
venvs (``bash benchmarks/setup_peers_dkl.sh``), as their README loops do it: a fresh model per step,
gpax with its default 1000 SVI steps + ``predict_in_batches``, atomai with 200 cycles + ``predict``.

    python benchmarks/dkl_step.py [--sizes 50,200,500] [--peers gpax,atomai] [--device cpu|cuda]
                                  [--survey EDGE]    # survey edge in px; 271 gives ~65k candidates (GPU figure)

Prints one JSON line per n with every figure side by side, and the ratios.
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

from emedge_core.dkl import DKLRegressor  # noqa: E402
from emedge_core.patches import make_patches  # noqa: E402
from emedge_core.scalarize import from_spec  # noqa: E402
from emedge_core.twin import DigitalTwin  # noqa: E402


def data(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(raw features, PCA-16 features, y, random order, candidate coordinates) for a size x size twin."""
    twin = DigitalTwin(size=size, seed=0)
    raw = make_patches(twin.survey().image, 16)
    pca = make_patches(twin.survey().image, 16, components=16)
    truth = twin.truth(from_spec("eels_peak_energy"))
    y = truth[raw.coords[:, 0], raw.coords[:, 1]]
    order = np.random.default_rng(0).permutation(len(y))
    return raw.features, pca.features, y, order, raw.coords


def ours(x: np.ndarray, y: np.ndarray, order: np.ndarray, n: int, device: str, repeats: int = 3,
         coords: typing.Optional[np.ndarray] = None) -> dict[str, float]:
    """Median step seconds (warm update at n+k, k=1..repeats, + full posterior) and the first fit;
    with ``coords`` the model has the spatial kernel term (the default of ``emedge run``)."""
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
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    raw, pca, y, order, coords = data(args.survey)
    device = args.device or ("cuda" if __import__("torch").cuda.is_available() else "cpu")
    peers: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dkl.npz")
        np.savez(path, X=raw, y=y, order=order)
        for name in filter(None, args.peers.split(",")):
            peers[name] = peer(name, path, sizes)
    load = os.getloadavg()[0]
    for n in sizes:
        line = {"benchmark": "dkl_step", "n_observed": n, "n_candidates": len(y), "device": device,
                "ours_raw256": ours(raw, y, order, n, device, coords=coords),
                "ours_pca16": ours(pca, y, order, n, device, coords=coords),
                "ours_pca16_no_spatial": ours(pca, y, order, n, device)}
        for name, res in peers.items():
            if n in res:
                line[name] = {k: v for k, v in res[n].items() if k not in ("peer", "n")}
                line[f"speedup_vs_{name}"] = round(res[n]["step_s"] / line["ours_raw256"]["step_s"], 1)
        line["goal"] = "<= 0.3 s/step at n=200 on 2 CPU cores; >= 5x both peers"
        line["loadavg_1min"] = round(load, 2)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
