"""The *Stream Scan* panel: a whole synchronized SI or 4D scan streamed through the scalarizer, the
EMD writer and the stage directory (``emedge stream``), its scalar map a live data item; Start / Stop.

Start calls :func:`nionswift_plugin.emedge.console.stream` (the same path as the console) with the
window of this panel; the map and the progress come back through the
:class:`~nionswift_plugin.emedge.live_stream.LiveStream` listeners on the UI thread. The stage
directory it publishes to is what the HPC Jobs panel's *Follow a stage directory* job watches.
Every input error or failed scan shows as one ``error: ...`` line in the panel.
"""
from __future__ import annotations

import logging
import os
import typing

from emedge_core import EmedgeError
from emedge_core.scalarize import REGISTRY
from nionswift_plugin.emedge import console
from nionswift_plugin.emedge.live_stream import LiveStream, MapSnapshot
from nionswift_plugin.emedge.panels.experiment import SOURCE_LABELS
from nionswift_plugin.emedge.panels.form import Form, PanelDelegate, number, whole

LOG = logging.getLogger("emedge")
KIND_LABELS = {"si": "Spectrum image (EELS)", "4d": "4D-STEM (Ronchigram)"}


class StreamView:
    """The panel's widgets in one window and the scan they started."""

    def __init__(self, ui: typing.Any, document_window: typing.Any) -> None:
        self.window = document_window
        self.live: typing.Optional[LiveStream] = None
        f = self.form = Form(ui)
        self.source = f.combo("Source", list(SOURCE_LABELS), SOURCE_LABELS.__getitem__)
        self.replay_path = f.line("Replay file", "")
        self.kind = f.combo("Scan", list(KIND_LABELS), KIND_LABELS.__getitem__)
        self.scan = f.line("Size (HxW)", "16x16")
        self.scalarizer = f.combo("Scalarizer", ["(default)"] + sorted(REGISTRY))
        self.exposure_ms = f.line("Exposure (ms)", "10")
        self.block_rows = f.line("Block rows", "")
        self.out_dir = f.line("Folder", "")
        self.start_button, self.stop_button = f.buttons(("Start", self.start), ("Stop", self.stop))
        self.progress = f.progress()
        self.status = f.status("Ready. (Block rows: empty = one EMD chunk's; Folder: empty = "
                               "<staging dir>/streams/<UTC time>)")

    @property
    def widget(self) -> typing.Any:
        return self.form.column

    # -- buttons ---------------------------------------------------------------------------
    def start(self) -> None:
        """Read the form and start the scan; any problem becomes the status line."""
        if self.live is not None and self.live.running:
            return
        try:
            source = typing.cast(str, self.source.current_item)
            scal = typing.cast(str, self.scalarizer.current_item)
            live = console.stream(
                (self.replay_path.text or "") if source == "replay" else source,
                typing.cast(str, self.kind.current_item), self.scan.text or "",
                None if scal == "(default)" else scal, exposure_ms=number(self.exposure_ms, "exposure"),
                block_rows=whole(self.block_rows, "block rows") if (self.block_rows.text or "").strip() else None,
                out_dir=os.path.expanduser(self.out_dir.text.strip()) if (self.out_dir.text or "").strip() else None,
                document_window=self.window)
        except EmedgeError as e:
            self.status.text = f"error: {e}"
            return
        except Exception as e:   # a device that will not start: one line here, the traceback in the log
            LOG.exception("emedge: stream start failed")
            self.status.text = f"error: {type(e).__name__}: {e}"
            return
        self.live = live
        live.listeners.append(self._on_snapshot)
        self.progress.value = 0
        self.status.text = f"scanning {live.scan[0]}x{live.scan[1]} to {live.out} ..."
        self.start_button.text = "Running"

    def stop(self) -> None:
        if self.live is not None and self.live.running:
            self.live.stop()
            self.status.text = "stopping after the row in progress ..."

    def close(self) -> None:
        if self.live is not None:
            self.live.listeners.clear()
            self.live.stop()

    # -- UI thread -----------------------------------------------------------------------------
    def _on_snapshot(self, snap: MapSnapshot) -> None:
        self.progress.value = int(round(100 * snap.rows / max(snap.scan[0], 1)))
        self.status.text = snap.message
        if snap.state != "running":
            self.start_button.text = "Start"


class StreamPanel(PanelDelegate):
    """The Stream Scan panel (one view per window)."""

    panel_id = "emedge-stream-panel"
    panel_name = "Stream Scan"
    view_class = StreamView

