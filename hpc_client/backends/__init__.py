"""Backends: one small class per scheduler, all with the same six verbs and a stager.

A backend (:class:`Backend`) knows how to ``submit`` a staged job, ``find`` it again by its
idempotency key, ask its ``status`` and ``cancel`` it by its *native* id, write its script
``header`` and ``describe`` itself; its ``stager`` moves the files. The
:class:`~hpc_client.client.Client` does the rest (staging, the registry, waiting, tails,
fetching) the same way for all of them. A new backend: a module here with such a class, its
name in :data:`hpc_client.config.BACKENDS` and a branch in :func:`hpc_client.client.make_backend`
(see ``docs/architecture.md``).
"""
from __future__ import annotations

import dataclasses
import typing

from hpc_client.job import JobSpec, JobState
from hpc_client.staging import StagedJob, Stager


@dataclasses.dataclass
class NativeStatus:
    """What a backend reports about one job (times in Unix seconds)."""

    state: JobState
    exit_code: typing.Optional[int] = None
    submitted: typing.Optional[float] = None
    started: typing.Optional[float] = None
    ended: typing.Optional[float] = None
    reason: str = ""


class Backend(typing.Protocol):
    """The contract each backend module fulfils."""

    name: str

    @property
    def stager(self) -> Stager:
        """Moves files between here and the job's directory."""

    def submit(self, spec: JobSpec, staged: StagedJob) -> str:
        """Submit; return the native job id (raise SubmitAnswerLost if the answer was lost)."""

    def find(self, key: str) -> typing.Optional[str]:
        """The native id of the job carrying idempotency key ``key``, or None."""

    def status(self, native_id: str) -> NativeStatus: ...

    def cancel(self, native_id: str) -> None: ...

    def header(self, spec: JobSpec, node_dir: str) -> list[str]:
        """Lines for the top of the wrapper script (e.g. ``#SBATCH`` directives)."""

    def describe(self) -> dict[str, typing.Any]:
        """Settings (never secrets) that let the registry rebuild this backend."""


# Slurm's job states (squeue/REST and sacct names) onto ours.
SLURM_STATES = {
    "PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING, "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING, "REQUEUE_FED": JobState.PENDING, "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "SUSPENDED": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING, "SIGNALING": JobState.RUNNING, "RESIZING": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED, "NODE_FAIL": JobState.FAILED, "BOOT_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED, "DEADLINE": JobState.FAILED, "SPECIAL_EXIT": JobState.FAILED,
    "REVOKED": JobState.CANCELLED, "CANCELLED": JobState.CANCELLED, "PREEMPTED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
}


def slurm_state(name: str) -> JobState:
    """Map a Slurm state ("COMPLETED", "CANCELLED by 0", "FAILED") onto :class:`JobState`."""
    word = (name or "").split()[0].upper() if name else ""
    if word not in SLURM_STATES:
        return JobState.PENDING if not word else JobState.FAILED
    return SLURM_STATES[word]
