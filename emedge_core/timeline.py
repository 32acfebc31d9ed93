"""The instrument's state over a run, as ``experiment.h5`` keeps it, in a few lines for ``emedge inspect``.

:class:`~emedge_core.experiment.Experiment` reads ``Instrument.state()`` after every step and keeps
only what changed (dotted keys of the nested state, e.g. ``stage.x_m``); the file holds
``measured_s`` (n,) seconds from ``started_utc`` to each measurement and ``state_timeline`` (JSON:
[{"n": measurements so far, "s": seconds, "changed": {key: value}}]) beside the state at the start
(``instrument_state``). The metadata checks (:mod:`emedge_core.consistency`) run again whenever the
state changes; their findings carry the ``n`` they were made at.
"""
from __future__ import annotations

import json
import typing

import numpy as np

MAX_LINES = 12


def read_timeline(path: str) -> typing.Optional[dict[str, typing.Any]]:
    """started_utc, measured_s (n,), changes and findings of the run in ``path``; None when it has no timeline."""
    import h5py

    from emedge_core.emd import value

    with h5py.File(path, "r") as f:
        g = f.get("experiment")
        if g is None or "state_timeline" not in g.attrs:
            return None
        return {"started_utc": str(g.attrs.get("started_utc", "")),
                "measured_s": np.asarray(value(g["measured_s"]), np.float64) if "measured_s" in g else np.zeros(0),
                "changes": json.loads(g.attrs["state_timeline"]),
                "findings": json.loads(g.attrs.get("findings", "[]"))}


def describe(path: str) -> list[str]:
    """Lines for ``emedge inspect``: the span of the run, then each state change (the first
    :data:`MAX_LINES`) and each metadata finding with the measurement it was made at."""
    t = read_timeline(path)
    if t is None:
        return []
    s, changes = t["measured_s"], t["changes"]
    span = f"{s[-1]:.2f} s" if len(s) else "no measurement"
    lines = [f"  timeline: {len(s)} measurements over {span} from {t['started_utc']}; "
             f"{len(changes)} instrument state change(s)"]
    for c in changes[:MAX_LINES]:
        what = ", ".join(f"{k}={_short(v)}" for k, v in c["changed"].items())
        lines.append(f"    after {c['n']} at +{c['s']:.2f} s: {what}")
    if len(changes) > MAX_LINES:
        lines.append(f"    ... {len(changes) - MAX_LINES} more (JSON attribute /experiment state_timeline)")
    for finding in t["findings"]:
        lines.append(f"    check after {finding.get('n', '?')}: {finding['message']}")
    return lines


def _short(v: typing.Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
        return "[" + ", ".join(f"{x:.4g}" for x in v) + "]"
    text = json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."
