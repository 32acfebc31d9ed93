"""The *Autonomous Experiment* panel: source, scalarizer, window, budget and stopping rule; Start / Pause / Stop.

Start calls :func:`nionswift_plugin.emedge.console.start` (the same path as the console) with the
window of this panel; the live data items and the progress come back through the
:class:`~nionswift_plugin.emedge.live.LiveExperiment` listeners on the UI thread. Every input
error or failed run shows as one ``error: ...`` line in the panel.
"""
from __future__ import annotations

import json
import logging
import typing

from emedge_core import EmedgeError
from emedge_core.choices import POLICIES
from emedge_core.scalarize import REGISTRY
from nionswift_plugin.emedge import console
from nionswift_plugin.emedge.live import LiveExperiment, Snapshot
from nionswift_plugin.emedge.panels.form import Form, PanelDelegate, number, whole

LOG = logging.getLogger("emedge")
BATCH_LABELS = {"point": "Probe parked point by point", "scan": "Synchronized sub-scans (microscope)"}
SOURCE_LABELS = {"microscope": "Microscope (STEM controller)", "twin": "Digital twin", "replay": "Replay file"}


class ExperimentView:
    """The panel's widgets in one window and the experiment they started."""

    def __init__(self, ui: typing.Any, document_window: typing.Any) -> None:
        self.window = document_window
        self.live: typing.Optional[LiveExperiment] = None
        f = self.form = Form(ui)
        self.source = f.combo("Source", list(SOURCE_LABELS), SOURCE_LABELS.__getitem__)
        self.replay_path = f.line("Replay file", "")
        self.scalarizer = f.combo("Scalarizer", sorted(REGISTRY))
        self.scalarizer.current_item = "eels_band_integral"
        self.params = f.line("Parameters (JSON)", "{}")
        self.window_px = f.line("Window (px)", "8")
        self.patch_mode = f.combo("Patch mode", ["restrict", "reflect"])
        self.components = f.line("Components", "16")
        self.survey_px = f.line("Survey (px)", "64")
        self.exposure_ms = f.line("Exposure (ms)", "10")
        self.batches = f.combo("Batches", list(BATCH_LABELS), BATCH_LABELS.__getitem__)
        self.acquisition = f.combo("Acquisition", list(POLICIES))
        self.budget = f.line("Budget", "30")
        self.seeds = f.line("Seeds", "5")
        self.stop_std = f.line("Stop when std <", "")
        self.drift_every = f.line("Track drift every (steps)", "")
        self.start_button, self.pause_button, self.stop_button = f.buttons(
            ("Start", self.start), ("Pause", self.toggle_pause), ("Stop", self.stop))
        self.progress = f.progress()
        self.status = f.status("Ready.")
        self._set_running(False)

    @property
    def widget(self) -> typing.Any:
        return self.form.column

    # -- buttons ---------------------------------------------------------------------------
    def start(self) -> None:
        """Read the form and start the experiment; any problem becomes the status line."""
        if self.live is not None and self.live.running:
            return
        try:
            source = typing.cast(str, self.source.current_item)
            params = json.loads(self.params.text or "{}")
            if not isinstance(params, dict):
                raise EmedgeError("parameters must be a JSON object, e.g. {\"band_eV\": [5, 30]}")
            acquisition = typing.cast(str, self.acquisition.current_item)
            live = console.start(
                (self.replay_path.text or "") if source == "replay" else source,
                {"name": self.scalarizer.current_item, **params},
                budget=whole(self.budget, "budget"), seeds=whole(self.seeds, "seeds"),
                window_px=whole(self.window_px, "window"), acquisition=acquisition,
                patch_mode=typing.cast(str, self.patch_mode.current_item),
                components=whole(self.components, "components"),
                stop_uncertainty=number(self.stop_std, "stop std") if (self.stop_std.text or "").strip() else None,
                drift_every=whole(self.drift_every, "drift every") if (self.drift_every.text or "").strip() else None,
                survey_px=whole(self.survey_px, "survey"), exposure_ms=number(self.exposure_ms, "exposure"),
                batch_scan=self.batches.current_item == "scan",
                document_window=self.window)
        except json.JSONDecodeError as e:
            self.status.text = f"error: parameters are not valid JSON: {e}"
            return
        except EmedgeError as e:
            self.status.text = f"error: {e}"
            return
        except Exception as e:   # a device that will not start: one line here, the traceback in the log
            LOG.exception("emedge: start failed")
            self.status.text = f"error: {type(e).__name__}: {e}"
            return
        self.live = live
        live.listeners.append(self._on_snapshot)
        self.progress.value = 0
        self.status.text = "running: survey ..."
        self._set_running(True)

    def toggle_pause(self) -> None:
        if self.live is None or not self.live.running:
            return
        if self.live.experiment.paused:
            self.live.resume()
            self.pause_button.text = "Pause"
            self.status.text = "running"
        else:
            self.live.pause()
            self.pause_button.text = "Resume"
            self.status.text = "paused after the step in progress"

    def stop(self) -> None:
        if self.live is not None and self.live.running:
            self.live.stop()
            self.status.text = "stopping after the step in progress ..."

    def close(self) -> None:
        if self.live is not None:
            self.live.listeners.clear()
            self.live.stop()

    # -- UI thread -----------------------------------------------------------------------------
    def _on_snapshot(self, snap: Snapshot) -> None:
        self.progress.value = int(round(100 * snap.n_measured / max(snap.budget, 1)))
        self.status.text = snap.message
        if snap.state in ("finished", "stopped", "failed"):
            self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.start_button.text = "Running" if running else "Start"
        self.pause_button.text = "Pause"


class ExperimentPanel(PanelDelegate):
    """The Autonomous Experiment panel (one view per window)."""

    panel_id = "emedge-experiment-panel"
    panel_name = "Autonomous Experiment"
    view_class = ExperimentView
