"""The ``local`` backend: the same staged job as a subprocess on this machine (no cluster needed).

The wrapper records the exit code in ``.emedge/exit_code``; the process id and a
cancellation mark live next to it, so a later process (another CLI call) can still
answer ``status`` and ``cancel``. Native ids are the idempotency keys.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import typing

from hpc_client.backends import NativeStatus
from hpc_client.errors import JobNotFound
from hpc_client.job import JobSpec, JobState
from hpc_client.staging import META, SharedDirStager, StagedJob


class LocalBackend:
    """Run jobs as process groups under ``staging_dir`` (default ``~/.cache/emedge/hpc-jobs``)."""

    name = "local"

    def __init__(self, staging_dir: str, **_: typing.Any) -> None:
        self.stager = SharedDirStager(staging_dir)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def _meta(self, key: str, name: str) -> str:
        return self.stager.path(f"{key}/{META}/{name}")

    def header(self, spec: JobSpec, node_dir: str) -> list[str]:
        return []

    def describe(self) -> dict[str, typing.Any]:
        return {"staging_dir": self.stager.local_root}

    def submit(self, spec: JobSpec, staged: StagedJob) -> str:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.path.expanduser("~"),
               **spec.environment}
        with open(self._meta(staged.rel, "stdout"), "wb") as out, open(self._meta(staged.rel, "stderr"), "wb") as err:
            proc = subprocess.Popen(["bash", self._meta(staged.rel, "wrapper.sh")], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, env=env, start_new_session=True)
        self._procs[staged.rel] = proc
        with open(self._meta(staged.rel, "pid"), "w") as fp:
            fp.write(str(proc.pid))
        return staged.rel

    def find(self, key: str) -> typing.Optional[str]:
        return key if os.path.exists(self._meta(key, "pid")) else None

    def _pid(self, key: str) -> int:
        try:
            with open(self._meta(key, "pid")) as fp:
                return int(fp.read())
        except FileNotFoundError:
            raise JobNotFound(f"no local job {key} under {self.stager.local_root}") from None

    def _alive(self, key: str, pid: int) -> bool:
        proc = self._procs.get(key)
        if proc is not None:
            return proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def status(self, native_id: str) -> NativeStatus:
        pid = self._pid(native_id)
        submitted = os.path.getmtime(self._meta(native_id, "pid"))
        exit_file = self._meta(native_id, "exit_code")
        alive = self._alive(native_id, pid)
        if os.path.exists(self._meta(native_id, "cancelled")):
            return NativeStatus(JobState.CANCELLED, None, submitted, submitted,
                                os.path.getmtime(self._meta(native_id, "cancelled")), "cancelled")
        if os.path.exists(exit_file) and not alive:
            with open(exit_file) as fp:
                code = int(fp.read().strip() or 1)
            state = JobState.COMPLETED if code == 0 else JobState.FAILED
            return NativeStatus(state, code, submitted, submitted, os.path.getmtime(exit_file))
        if alive:
            return NativeStatus(JobState.RUNNING, None, submitted, submitted)
        return NativeStatus(JobState.FAILED, None, submitted, submitted, time.time(), "the process vanished")

    def cancel(self, native_id: str) -> None:
        pid = self._pid(native_id)
        if not self._alive(native_id, pid):
            return
        with open(self._meta(native_id, "cancelled"), "w"):
            pass
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        proc = self._procs.get(native_id)
        if proc is not None:
            proc.wait()
