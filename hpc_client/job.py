"""The job model: what to run (:class:`JobSpec`) and what became of it (:class:`Job`)."""
from __future__ import annotations

import dataclasses
import enum
import shlex
import typing
import uuid


class JobState(str, enum.Enum):
    """Backend-independent job states; every backend maps its own names onto these."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change state."""
        return self not in (JobState.PENDING, JobState.RUNNING)


@dataclasses.dataclass(frozen=True)
class Resources:
    """What the job asks the scheduler for. ``time_limit_min``: wall-clock minutes;
    ``partition``: None = the cluster's default; ``memory_mb``: None = the default."""

    cpus: int = 1
    time_limit_min: int = 10
    partition: typing.Optional[str] = None
    memory_mb: typing.Optional[int] = None


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A job to run: exactly one of ``script`` (text, with or without a ``#!`` line; bash
    by default) or ``command`` (argv list).

    stage_in: local files copied into the job's working directory (same base name) before
    it starts, checked against their SHA-256 on the node. stage_out: file names (relative
    to the working directory) the job writes; their checksums are taken on the node and
    checked again when fetched. environment: extra variables for the job (nothing of the
    caller's environment leaks in besides ``PATH``). native: backend-specific fields merged
    into the scheduler's job description (e.g. Slurm ``begin_time``, ``account``, ``qos``).
    idempotency_key: the same key never makes a second job; a fresh one by default.
    """

    script: typing.Optional[str] = None
    command: typing.Optional[typing.Sequence[str]] = None
    name: str = "emedge"
    resources: Resources = Resources()
    environment: typing.Mapping[str, str] = dataclasses.field(default_factory=dict)
    stage_in: typing.Sequence[str] = ()
    stage_out: typing.Sequence[str] = ()
    native: typing.Mapping[str, typing.Any] = dataclasses.field(default_factory=dict)
    idempotency_key: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if (self.script is None) == (self.command is None):
            raise ValueError("a JobSpec needs exactly one of script or command")
        for out in self.stage_out:
            if out.startswith("/") or ".." in out.split("/"):
                raise ValueError(f"stage_out names are relative to the job directory, not {out!r}")
        if not self.idempotency_key.replace("-", "").isalnum():
            raise ValueError("idempotency_key may hold only letters, digits and '-'")

    def script_text(self) -> str:
        """The job body as a script file (``command`` becomes a one-line bash script)."""
        if self.command is not None:
            return "#!/bin/bash\nexec " + shlex.join(self.command) + "\n"
        assert self.script is not None
        return self.script if self.script.startswith("#!") else "#!/bin/bash\n" + self.script

    @property
    def job_name(self) -> str:
        """The scheduler's job name: the human name plus the key, so a lost submit can be found."""
        return f"{self.name}.{self.idempotency_key}"


@dataclasses.dataclass
class Job:
    """A submitted job as last seen. Times are Unix seconds (None until known); ``exit_code`` is
    the job's own exit status (128 + N when killed by signal N); ``outputs`` are the stage-out
    names the job produced; ``workdir`` is the job's directory on the node."""

    id: str
    state: JobState
    backend: str
    name: str = ""
    exit_code: typing.Optional[int] = None
    submitted: typing.Optional[float] = None
    started: typing.Optional[float] = None
    ended: typing.Optional[float] = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    outputs: list[str] = dataclasses.field(default_factory=list)
    workdir: str = ""
    reason: str = ""

    def summary(self) -> dict[str, typing.Any]:
        """The CLI's ``--json`` object."""
        return {"id": self.id, "state": self.state.value, "exit_code": self.exit_code, "outputs": list(self.outputs)}
