"""The *HPC Jobs* panel: send the selected data item or an experiment as a job, follow it, fetch the results.

Three job kinds (:mod:`emedge_core.jobs`):

- *reduce selected data item*: the item (a spectrum image or 4D-STEM scan) is written as an EMD
  file and every frame is scalarized on the node; the map comes back as a new data item;
- *retrain on experiment file*: the DKL model is refitted on all measurements of an
  ``experiment.h5``; prediction and uncertainty come back as new data items;
- *follow a stage directory*: ``emedge follow --until-complete`` on the stage a streamed scan
  publishes to (the Stream Scan panel, ``emedge.stream`` or ``emedge stream --stage``), submitted before,
  during or after the scan; its RESULT.h5, replaced after every block, is read from the job directory
  while the job runs and shown as the live data item *emedge follow <job id>*
  (:class:`~nionswift_plugin.emedge.live_stream.FollowWatch`).

The backend and its endpoint come from the facility settings (:mod:`emedge_core.settings`) and
``hpc_client``'s own configuration, through :func:`emedge_core.jobs.open_client` as for ``emedge jobs``;
all network and file work runs on worker threads.
"""
from __future__ import annotations

import logging
import os
import threading
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.choices import HPC_BACKENDS
from emedge_core.jobs import open_client
from emedge_core.settings import load_settings
from nionswift_plugin.emedge.live_stream import FollowWatch, MapSnapshot
from nionswift_plugin.emedge.panels.export import Item, default_path, export_items
from nionswift_plugin.emedge.panels.form import Form, PanelDelegate

LOG = logging.getLogger("emedge")
KINDS = {"reduce": "Reduce selected data item", "retrain": "Retrain on experiment file",
         "follow": "Follow a stage directory (live)"}



class HPCView:
    """The panel's widgets in one window, the jobs submitted from it and their results."""

    def __init__(self, ui: typing.Any, document_window: typing.Any) -> None:
        self.window = document_window
        settings = load_settings()
        f = self.form = Form(ui)
        self.backend = f.combo("Backend", list(HPC_BACKENDS))
        self.backend.current_item = settings.hpc_backend if settings.hpc_backend in HPC_BACKENDS else "local"
        self.kind = f.combo("Job", list(KINDS), KINDS.__getitem__)
        self.scalarizer = f.line("Scalarizer", "eels_band_integral")
        self.experiment = f.line("Experiment file", "")
        self.stage = f.line("Stage directory", "")
        self.submit_button, self.refresh_button, self.fetch_button = f.buttons(
            ("Submit", self.submit), ("Refresh", self.refresh), ("Fetch results", self.fetch))
        self.jobs_label = ui.create_label_widget("No jobs yet.")
        self.form.column.add(self.jobs_label)
        self.status = f.status("Ready.")
        self.jobs: dict[str, typing.Any] = {}          # job id -> hpc_client.job.Job (newest state)
        self.sources: dict[str, tuple[int, ...]] = {}  # job id -> scan shape of the reduced data item
        self.fetched: dict[str, list[typing.Any]] = {}  # job id -> data items made from its outputs
        self.clients: dict[str, typing.Any] = {}       # backend -> hpc_client Client (one per backend)
        self.watches: dict[str, FollowWatch] = {}     # follow job id -> its live RESULT.h5
        self.thread: typing.Optional[threading.Thread] = None

    @property
    def widget(self) -> typing.Any:
        return self.form.column

    # -- buttons (UI thread) -----------------------------------------------------------------
    def submit(self) -> None:
        backend, kind = typing.cast(str, self.backend.current_item), typing.cast(str, self.kind.current_item)
        scalarizer = self.scalarizer.text or ""        # widgets are read here: Qt allows it on the UI thread only
        if kind == "reduce":
            # the public DocumentWindow (Facade ~1.0) has no multi-selection; see panels/export.py
            data_items = self.window._document_controller.selected_data_items
            if len(data_items) != 1:
                self.status.text = "error: select one data item (a spectrum image or 4D-STEM scan) to reduce"
                return
            d = data_items[0]
            item = Item(d.title, str(d.uuid), d.xdata)
            self._in_background("submitting", lambda: self._submit_reduce(backend, item, scalarizer))
        elif kind == "follow":
            stage = os.path.expanduser((self.stage.text or "").strip())
            self._in_background("submitting", lambda: self._submit_follow(backend, stage, scalarizer))
        else:
            path = os.path.expanduser((self.experiment.text or "").strip())
            self._in_background("submitting", lambda: self._submit_retrain(backend, path))

    def refresh(self) -> None:
        self._in_background("refreshing", self._refresh)

    def fetch(self) -> None:
        self._in_background("fetching", self._fetch)

    # -- worker thread --------------------------------------------------------------------------
    def _in_background(self, what: str, fn: typing.Callable[[], str]) -> None:
        """Run ``fn`` on a worker thread; its return value (or error) becomes the status line."""
        if self.thread is not None and self.thread.is_alive():
            self.status.text = "busy: wait for the previous request"
            return
        self.status.text = f"{what} ..."

        def work() -> None:
            from hpc_client.errors import HPCError

            try:
                message = fn()
            except (EmedgeError, HPCError) as e:
                message = f"error: {e}"
            except Exception as e:   # one line in the panel, the traceback in the log
                LOG.exception("emedge HPC request failed")
                message = f"error: {type(e).__name__}: {e}"
            self.window.queue_task(lambda: self._show(message))

        self.thread = threading.Thread(target=work, name="emedge-hpc", daemon=True)
        self.thread.start()

    def _client(self, backend: str) -> typing.Any:
        if backend not in self.clients:
            self.clients[backend] = open_client(backend)
        return self.clients[backend]

    def _submit_reduce(self, backend: str, item: Item, scalarizer: str) -> str:
        from emedge_core.scalarize import from_spec
        from emedge_core.jobs import reduce_emd_job

        if item.xdata is None or item.xdata.data.ndim < 2:
            raise EmedgeError(f"{item.title!r} is not a scan of frames (spectrum image or 4D-STEM)")
        sig = 1 if from_spec(scalarizer).signal_kind == "spectrum" else 2
        path = default_path()
        export_items([item], path, "auto")
        job = self._client(backend).submit(reduce_emd_job(path, scalarizer.strip()))
        self.jobs[job.id] = job
        self.sources[job.id] = tuple(item.xdata.data.shape[:-sig])
        return f"submitted {job.id} ({job.state.value})"

    def _submit_retrain(self, backend: str, path: str) -> str:
        from emedge_core.jobs import retrain_job

        if not os.path.isfile(path):
            raise EmedgeError(f"experiment file not found: {path or '(none given)'}")
        job = self._client(backend).submit(retrain_job(path))
        self.jobs[job.id] = job
        return f"submitted {job.id} ({job.state.value})"

    def _submit_follow(self, backend: str, stage: str, scalarizer: str) -> str:
        from emedge_core.jobs import follow_job
        from emedge_core.scalarize import from_spec

        if not stage:
            raise EmedgeError("no stage directory given (the Stream Scan panel's <folder>/stage)")
        from_spec(scalarizer.strip())                  # a bad scalarizer is an error line here, not a failed job
        client = self._client(backend)
        job = client.submit(follow_job(stage, scalarizer.strip()))
        self.jobs[job.id] = job
        scratch = os.path.join(load_settings().staging_dir, "hpc-results", job.id.replace(":", "_"))
        self.window.queue_task(lambda: self._watch(client, job.id, scratch))
        return f"submitted {job.id} ({job.state.value}); following {stage}"

    def _refresh(self) -> str:
        for job_id, job in list(self.jobs.items()):
            self.jobs[job_id] = self._client(job.backend).status(job_id)
        return f"{len(self.jobs)} job(s) refreshed"

    def _fetch(self) -> str:
        from hpc_client.job import JobState

        self._refresh()
        done = [j for j in self.jobs.values() if j.state == JobState.COMPLETED and j.id not in self.fetched]
        if not done:
            return "nothing to fetch: no newly completed job"
        results: list[tuple[str, str, np.ndarray]] = []
        for job in done:
            dest = os.path.join(load_settings().staging_dir, "hpc-results", job.id.replace(":", "_"))
            for path in self._client(job.backend).fetch(job.id, dest):
                results.extend((job.id, title, data) for title, data in self._read_output(job, path))
            self.fetched.setdefault(job.id, [])
        self.window.queue_task(lambda: self._add_items(results))
        return f"fetched {len(results)} result(s) from {len(done)} job(s)"

    def _read_output(self, job: typing.Any, path: str) -> list[tuple[str, np.ndarray]]:
        """(title, array) of each result array in the output file ``path``."""
        from emedge_core import emd

        name = os.path.basename(path)
        if path.endswith(".npy"):
            data = np.load(path, allow_pickle=False)
            shape = self.sources.get(job.id)
            if shape is not None and data.size == int(np.prod(shape)):
                data = data.reshape(shape)
            return [(f"{job.name} {name}", data)]
        if path.endswith((".emd", ".h5")):
            return [(f"{job.name} {key}", np.asarray(a)) for key, a in emd.read(path).items()]
        return []

    def close(self) -> None:
        """Stop watching the follow jobs (the jobs themselves go on)."""
        for watch in self.watches.values():
            watch.stop()

    # -- UI thread ------------------------------------------------------------------------------
    def _watch(self, client: typing.Any, job_id: str, scratch: str) -> None:
        watch = self.watches[job_id] = FollowWatch(self.window, client, job_id, scratch)
        watch.listeners.append(self._on_follow)
        watch.start()

    def _on_follow(self, snap: MapSnapshot, job: typing.Any) -> None:
        if job is not None:
            self.jobs[job.id] = job
        self._show(snap.message)

    def _add_items(self, results: list[tuple[str, str, np.ndarray]]) -> None:
        for job_id, title, data in results:
            item = self.window.library.create_data_item_from_data(data, title)
            self.fetched.setdefault(job_id, []).append(item)

    def _show(self, message: str) -> None:
        self.status.text = message
        lines = [f"{j.id}  {j.state.value}  {j.name}" + (f"  ({j.reason})" if j.reason else "")
                 for j in self.jobs.values()]
        self.jobs_label.text = "\n".join(lines) if lines else "No jobs yet."


class HPCPanel(PanelDelegate):
    """The HPC Jobs panel (one view per window)."""

    panel_id = "emedge-hpc-panel"
    panel_name = "HPC Jobs"
    view_class = HPCView
