"""The client: one :class:`Client` per backend, the same verbs for all of them.

>>> client = open_client("local")                                  # doctest: +SKIP
>>> job = client.submit(JobSpec(command=["echo", "hi"]))           # doctest: +SKIP
>>> client.wait(job.id).state                                      # doctest: +SKIP
<JobState.COMPLETED: 'COMPLETED'>
"""
from __future__ import annotations

import time
import typing

from hpc_client import config, staging
from hpc_client.backends import Backend
from hpc_client.errors import HPCError, JobFailed, JobNotFound
from hpc_client.job import Job, JobSpec, JobState
from hpc_client.registry import Registry
from hpc_client.transport import SubmitAnswerLost


def make_backend(name: str, **overrides: typing.Any) -> Backend:
    """Backend ``name`` built from the config file, the environment and ``overrides``."""
    opts = config.settings(name, **overrides)
    if name == "local":
        from hpc_client.backends.local import LocalBackend

        return LocalBackend(**opts)
    if name == "slurmrest":
        from hpc_client.backends.slurmrest import SlurmRestBackend

        return SlurmRestBackend(**opts)
    from hpc_client.backends.sfapi import SfapiBackend

    return SfapiBackend(**opts)


def open_client(backend: str = "local", registry: typing.Optional[Registry] = None,
                **overrides: typing.Any) -> "Client":
    """A :class:`Client` for ``backend`` ("local", "slurmrest" or "sfapi")."""
    return Client(make_backend(backend, **overrides), registry)


def client_for(job_id: str, registry: typing.Optional[Registry] = None) -> "Client":
    """The client that can follow ``job_id`` (its backend and server come from the registry;
    credentials again from the config file or environment)."""
    registry = registry or Registry()
    try:
        record = registry.get(job_id)
    except JobNotFound:
        backend = job_id.partition(":")[0]
        if backend not in config.BACKENDS or ":" not in job_id:
            raise
        record = {"backend": backend}
    return Client(make_backend(record["backend"], **record.get("settings", {})), registry)


class Client:
    """Submit, follow, cancel and fetch jobs on one backend.

    poll / max_poll / poll_factor: :meth:`wait` polls after ``poll`` s, each wait ``poll_factor``
    times the last, at most ``max_poll`` s.
    """

    def __init__(self, backend: Backend, registry: typing.Optional[Registry] = None, poll: float = 0.2,
                 max_poll: float = 5.0, poll_factor: float = 1.5) -> None:
        self.backend = backend
        self.registry = registry or Registry()
        self.poll, self.max_poll, self.poll_factor = poll, max_poll, poll_factor

    def _id(self, native_id: str) -> str:
        return f"{self.backend.name}:{native_id}"

    def _record(self, job_id: str) -> dict[str, typing.Any]:
        try:
            return self.registry.get(job_id)
        except JobNotFound:
            prefix, _, native = job_id.partition(":")
            if prefix != self.backend.name or not native:
                raise
            return {"backend": prefix, "native": native, "rel": None, "name": ""}

    def submit(self, spec: JobSpec) -> Job:
        """Stage ``spec``'s inputs and submit it; a key already submitted returns that job instead."""
        known = self.registry.find_key(self.backend.name, spec.idempotency_key)
        if known is not None:
            return self.status(known)
        native = self.backend.find(spec.idempotency_key)
        staged = None
        if native is None:
            staged = staging.stage(self.backend.stager, spec, lambda d: self.backend.header(spec, d))
            try:
                native = self.backend.submit(spec, staged)
            except SubmitAnswerLost:
                native = self.backend.find(spec.idempotency_key) or self.backend.submit(spec, staged)
        job_id = self._id(native)
        self.registry.put(job_id, {
            "backend": self.backend.name, "native": native, "key": spec.idempotency_key, "name": spec.name,
            "rel": staged.rel if staged else spec.idempotency_key, "stage_out": list(spec.stage_out),
            "settings": self.backend.describe(), "submitted": time.time()})
        return self.status(job_id)

    def status(self, job_id: str) -> Job:
        """The job as the backend sees it now, with its stdout/stderr tails and produced outputs."""
        rec = self._record(job_id)
        ns = self.backend.status(rec["native"])
        job = Job(id=job_id, state=ns.state, backend=self.backend.name, name=rec.get("name", ""),
                  exit_code=ns.exit_code, submitted=ns.submitted, started=ns.started, ended=ns.ended,
                  reason=ns.reason)
        if rec.get("rel"):
            job.workdir = f"{self.backend.stager.node_root.rstrip('/')}/{rec['rel']}"
            if ns.state != JobState.PENDING:
                job.stdout_tail, job.stderr_tail = staging.tails(self.backend.stager, rec["rel"])
            if ns.state.terminal:
                job.outputs = list(staging.output_sums(self.backend.stager, rec["rel"]))
        return job

    def wait(self, job_id: str, timeout: typing.Optional[float] = None,
             callback: typing.Optional[typing.Callable[[Job], None]] = None, check: bool = False) -> Job:
        """Poll until the job ends (backing off between polls); ``callback(job)`` after each poll.
        ``check``: raise :class:`JobFailed` unless it COMPLETED. A server that goes away for a
        while is ridden out by the transport's retries."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.poll
        while True:
            job = self.status(job_id)
            if callback is not None:
                callback(job)
            if job.state.terminal:
                if check and job.state != JobState.COMPLETED:
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() + delay > deadline:
                raise HPCError(f"job {job_id} still {job.state.value} after {timeout} s")
            time.sleep(delay)
            delay = min(self.max_poll, delay * self.poll_factor)

    def cancel(self, job_id: str) -> Job:
        """Cancel in any state: pending and running jobs are stopped; an ended job is left as it is.
        A running job may read RUNNING for a while after this: Slurm keeps it COMPLETING until its
        processes are gone: a fraction of a second, but over 30 s on a loaded node (Slurm sends
        SIGKILL to what survives SIGTERM after its KillWait, 30 s by default)."""
        rec = self._record(job_id)
        if not self.backend.status(rec["native"]).state.terminal:
            self.backend.cancel(rec["native"])
        return self.status(job_id)

    def fetch(self, job_id: str, dest: str) -> list[str]:
        """Copy the job's outputs into ``dest`` (checksums checked); returns their paths."""
        rec = self._record(job_id)
        if not rec.get("rel"):
            raise JobNotFound(f"job {job_id} was not submitted from here: its staging directory is unknown")
        state = self.backend.status(rec["native"]).state
        if not state.terminal:
            raise HPCError(f"job {job_id} is still {state.value}; fetch it once it has ended")
        return staging.fetch(self.backend.stager, rec["rel"], dest)

    def read_output(self, job_id: str, name: str) -> typing.Optional[bytes]:
        """The bytes of ``name`` (relative to the job directory) as they are now, also while the job
        runs (None until it exists): for a job that replaces a result file atomically as it goes
        (``emedge follow``). Unchecked - :meth:`fetch` checks the final outputs' checksums."""
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"output names are relative to the job directory, not {name!r}")
        rec = self._record(job_id)
        if not rec.get("rel"):
            raise JobNotFound(f"job {job_id} was not submitted from here: its staging directory is unknown")
        return self.backend.stager.read_bytes(f"{rec['rel']}/{name}")
