"""One error hierarchy for everything the HPC client can report.

:class:`HPCError` is the root; callers that only want "did it work" catch that. The
children say what to do next: fix credentials (:class:`AuthError`), wait and retry
(:class:`Unreachable`), look at the job's stderr (:class:`JobFailed`), check the id
(:class:`JobNotFound`) or the staged files (:class:`StagingError`).
Messages never contain a token or secret.
"""
from __future__ import annotations

import typing

if typing.TYPE_CHECKING:
    from hpc_client.job import Job


class HPCError(Exception):
    """Something went wrong talking to, or running on, an HPC backend."""


class ConfigError(HPCError):
    """A backend is missing its URL, user, credentials or another setting."""


class AuthError(HPCError):
    """The server rejected the credentials (wrong, expired or missing token)."""


class Unreachable(HPCError):
    """The server could not be reached, even after the configured retries."""


class JobNotFound(HPCError):
    """The backend (or the local job registry) does not know this job id."""


class StagingError(HPCError):
    """A staged file is missing or its checksum does not match."""


class JobFailed(HPCError):
    """A job ended in FAILED, TIMEOUT or CANCELLED; ``job`` holds its exit code and stderr tail."""

    def __init__(self, job: "Job") -> None:
        tail = (job.stderr_tail or "").strip().splitlines()[-5:]
        detail = "; stderr tail:\n  " + "\n  ".join(tail) if tail else ""
        super().__init__(f"job {job.id} ended {job.state.value} (exit code {job.exit_code}){detail}")
        self.job = job
