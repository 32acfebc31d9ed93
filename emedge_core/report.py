"""``maps.png``: what the experiment saw and what the model believes, in four panels."""
from __future__ import annotations

import numpy as np

from emedge_core.experiment import ExperimentResult


def plot_maps(result: ExperimentResult, path: str) -> None:
    """Survey with measured points in order, prediction, uncertainty, learning curve -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = result.scalarizer.get("name", "scalar")
    fig, ax = plt.subplots(2, 2, figsize=(11, 10), constrained_layout=True)
    a = ax[0, 0]
    a.imshow(result.survey.image, cmap="gray")
    pos = result.positions
    ok = np.isfinite(result.values)
    if len(pos):
        sc = a.scatter(pos[ok, 1], pos[ok, 0], c=np.flatnonzero(ok), cmap="plasma", s=14, edgecolors="none")
        a.scatter(pos[~ok, 1], pos[~ok, 0], marker="x", c="red", s=20, label="failed")
        a.plot(pos[:, 1], pos[:, 0], "-", color="cyan", lw=0.4, alpha=0.5)
        fig.colorbar(sc, ax=a, label="measurement order")
        if (~ok).any():
            a.legend(loc="lower right", fontsize=8)
    title = f"HAADF survey, {len(pos)} points ({result.config.acquisition})"
    if len(result.drift):                       # the specimen's path since the first survey, from the centre
        centre = np.asarray(result.survey.shape, np.float64) / 2
        trail = np.vstack([[0.0, 0.0], result.drift[:, 1:3]]) + centre
        a.plot(trail[:, 1], trail[:, 0], "-", color="yellow", lw=1.5)
        a.plot(trail[-1, 1], trail[-1, 0], "o", color="yellow", ms=4)
        title += f"\nspecimen drift ({result.drift[-1, 1]:+.1f}, {result.drift[-1, 2]:+.1f}) px (yellow, from centre)"
    a.set_title(title)
    for a, data, title, cmap in ((ax[0, 1], result.prediction, f"predicted {name}", "viridis"),
                                 (ax[1, 0], result.uncertainty, "std of the predicted scalar", "magma")):
        im = a.imshow(data, cmap=cmap)
        fig.colorbar(im, ax=a)
        a.set_title(title)
    a = ax[1, 1]
    # one x axis for both curves: measurements made (seeds and failures included) by the end of each
    # step, so the seed step and batches (q > 1) line up with the best-so-far curve
    x = np.asarray(result.step_measured if len(result.step_measured) == len(result.max_std)
                   else np.arange(1, len(result.max_std) + 1))
    lines = a.plot(x, result.max_std, ".-", ms=3, label="max std")
    a.set_xlabel("measurements" if len(result.step_measured) == len(result.max_std) else "step")
    a.set_ylabel(f"max std of predicted {name}")
    good = result.values[ok]
    if len(good):
        a2 = a.twinx()
        lines += a2.plot(np.flatnonzero(ok) + 1, np.maximum.accumulate(good), "g-", label="best so far")
        a2.set_ylabel("best measured", color="g")
    a.set_title(f"learning curve (stopped by {result.stopped_by})")
    a.legend(lines, [ln.get_label() for ln in lines], loc="upper right", fontsize=8)
    fig.savefig(path, dpi=90)
    plt.close(fig)
