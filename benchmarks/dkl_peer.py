"""Peer side of benchmarks/dkl_step.py, run inside a peer's own venv (gpax or atomai).

    python dkl_peer.py gpax|atomai DATA.npz N [N ...]

DATA.npz holds X (N_all, F) float32, y (N_all,) and order (N_all,) int: the observed set at
size n is order[:n]. For each n one active-learning step is timed the way each peer's README
loop does it: fit on order[:n+1] (fresh model, the peer's default training length) and predict
over every candidate. Prints one JSON object per n.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def gpax_step(x: np.ndarray, y: np.ndarray, tr: np.ndarray) -> tuple[float, float, np.ndarray]:
    import gpax
    import jax

    key1, key2 = gpax.utils.get_keys()
    t0 = time.perf_counter()
    dkl = gpax.viDKL(x.shape[1], 2)
    dkl.fit(key1, x[tr], y[tr], num_steps=1000, step_size=5e-3, progress_bar=False, print_summary=False)
    t1 = time.perf_counter()
    mean, var = dkl.predict_in_batches(key2, x, batch_size=1000)
    jax.block_until_ready(mean)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, np.asarray(mean)


def atomai_step(x: np.ndarray, y: np.ndarray, tr: np.ndarray) -> tuple[float, float, np.ndarray]:
    import atomai as aoi

    t0 = time.perf_counter()
    dkl = aoi.models.dklGPR(x.shape[1], embedim=2, precision="double")
    dkl.fit(x[tr], y[tr], training_cycles=200, lr=1e-2)
    t1 = time.perf_counter()
    mean, var = dkl.predict(x, batch_size=len(x))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, np.asarray(mean).reshape(-1)


def main() -> None:
    peer, path, sizes = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]]
    d = np.load(path)
    x, y, order = d["X"].astype(np.float32), d["y"].astype(np.float64), d["order"]
    step = {"gpax": gpax_step, "atomai": atomai_step}[peer]
    for n in sizes:
        fit_s, pred_s, mean = step(x, y, order[: n + 1])
        rmse = float(np.sqrt(np.mean((mean - y) ** 2)) / y.std())
        print(json.dumps({"peer": peer, "n": n, "fit_s": fit_s, "predict_s": pred_s, "step_s": fit_s + pred_s,
                          "rmse_rel": rmse}), flush=True)


if __name__ == "__main__":
    main()
