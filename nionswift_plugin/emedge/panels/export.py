"""The *Compress & Export* panel: the selected data items -> one EMD file through :func:`emedge_core.emd.write`.

Each data item becomes one array named after its title, with its calibrations as axes and its
intensity units; the file's provenance holds the codec, the items' titles, UUIDs and metadata
(Swift's instrument metadata included) and the software versions. Compression runs on a worker
thread; the ratio per array comes back to the status line.
"""
from __future__ import annotations

import datetime
import logging
import os
import re
import threading
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.settings import load_settings
from nionswift_plugin.emedge.panels.form import Form, PanelDelegate

LOG = logging.getLogger("emedge")


def default_path() -> str:
    """``<staging dir>/exports/<UTC time>.emd``."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return os.path.join(load_settings().staging_dir, "exports", f"{stamp}.emd")


def array_name(title: str, taken: typing.Collection[str]) -> str:
    """An HDF5-safe, unique array name from a data item title."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", title).strip("_") or "data"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


class Item(typing.NamedTuple):
    """What is exported of one data item (taken on the UI thread)."""

    title: str
    uuid: str
    xdata: typing.Any       # nion.data DataAndMetadata, or None


def export_items(items: typing.Sequence[Item], path: str, codec: str) -> dict[str, dict[str, typing.Any]]:
    """Write data items to the EMD file ``path``; returns emd's stats per array."""
    from emedge_core import emd, provenance

    if not items:
        raise EmedgeError("select one or more data items first")
    arrays: dict[str, np.ndarray] = {}
    dims: dict[str, list[tuple[str, str, float, float]]] = {}
    units: dict[str, str] = {}
    sig: dict[str, int] = {}
    described: list[dict[str, typing.Any]] = []
    for item in items:
        xd = item.xdata
        if xd is None:
            raise EmedgeError(f"data item {item.title!r} holds no data")
        name = array_name(item.title or "data", arrays)
        arrays[name] = np.asarray(xd.data)
        dims[name] = [(f"dim{i}", c.units or "", float(c.offset), float(c.scale))
                      for i, c in enumerate(xd.dimensional_calibrations)]
        units[name] = xd.intensity_calibration.units or ""
        sig[name] = int(xd.datum_dimension_count)          # a spectrum image: (H, W) spectra of E channels
        described.append({"array": name, "title": item.title, "uuid": item.uuid, "metadata": dict(xd.metadata)})
    state: dict[str, typing.Any] = next((d["metadata"]["instrument"] for d in described
                                         if isinstance(d["metadata"].get("instrument"), dict)), {})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return emd.write(path, arrays, codec=codec, dims=dims, units=units, sig_ndim=sig,
                     provenance=provenance.collect({"source": "nionswift", "codec": codec, "data_items": described},
                                                   instrument_state=state))


class ExportView:
    """The panel's widgets in one window."""

    def __init__(self, ui: typing.Any, document_window: typing.Any) -> None:
        self.window = document_window
        f = self.form = Form(ui)
        self.codec = f.line("Codec", "auto")
        self.path = f.line("EMD file", "")
        (self.export_button,) = f.buttons(("Export selected", self.export))
        self.status = f.status("Select data items, then Export (codec: auto, blosc2, delta+blosc2, sparse, "
                               "sz3:abs=1 ...)")
        self.thread: typing.Optional[threading.Thread] = None
        self.stats: dict[str, dict[str, typing.Any]] = {}
        self.written: typing.Optional[str] = None

    @property
    def widget(self) -> typing.Any:
        return self.form.column

    def export(self) -> None:
        """Compress and write the selected data items on a worker thread."""
        if self.thread is not None and self.thread.is_alive():
            return
        # the public DocumentWindow (Facade ~1.0) knows one target data item, not a selection of several
        items = [Item(d.title, str(d.uuid), d.xdata) for d in self.window._document_controller.selected_data_items]
        path = (self.path.text or "").strip() or default_path()
        codec = (self.codec.text or "auto").strip()
        if not items:
            self.status.text = "error: select one or more data items first"
            return
        self.status.text = f"compressing {len(items)} data item(s) ..."
        self.written = None
        self.thread = threading.Thread(target=self._work, args=(items, path, codec), name="emedge-export", daemon=True)
        self.thread.start()

    def _work(self, items: list[Item], path: str, codec: str) -> None:
        try:
            stats = export_items(items, path, codec)
            parts = ", ".join(f"{n} {s['ratio']:.2f}x ({s['codec']})" for n, s in stats.items())
            message, written = f"wrote {path}: {parts}", path
        except EmedgeError as e:
            stats, message, written = {}, f"error: {e}", None
        except Exception as e:   # one line here, the traceback in the log
            LOG.exception("emedge export failed")
            stats, message, written = {}, f"error: {type(e).__name__}: {e}", None

        def show() -> None:
            self.stats, self.written = stats, written
            self.status.text = message

        self.window.queue_task(show)


class ExportPanel(PanelDelegate):
    """The Compress & Export panel (one view per window)."""

    panel_id = "emedge-export-panel"
    panel_name = "Compress & Export"
    view_class = ExportView
