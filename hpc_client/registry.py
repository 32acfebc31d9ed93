"""A small local registry of submitted jobs, so ``status``/``cancel``/``fetch`` can find a job's
backend, server and staging directory again from its id alone (e.g. in a later CLI call).

One JSON file, ``$EMEDGE_HPC_REGISTRY`` or ``~/.local/state/emedge/hpc-jobs.json``, updated
under an exclusive ``flock``. It never holds a token.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import typing

from hpc_client.errors import JobNotFound


def default_path() -> str:
    return os.environ.get("EMEDGE_HPC_REGISTRY") or os.path.expanduser("~/.local/state/emedge/hpc-jobs.json")


class Registry:
    """``put(job_id, record)`` / ``get(job_id)``; records are plain JSON objects."""

    def __init__(self, path: typing.Optional[str] = None) -> None:
        self.path = path or default_path()

    @contextlib.contextmanager
    def _locked(self) -> typing.Iterator[dict[str, typing.Any]]:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(self.path) as fp:
                    data = json.load(fp)
            except (FileNotFoundError, json.JSONDecodeError):
                data = {}
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                tmp = self.path + ".tmp"
                with open(tmp, "w") as fp:
                    json.dump(data, fp, indent=1)
                os.replace(tmp, self.path)

    def put(self, job_id: str, record: dict[str, typing.Any]) -> None:
        with self._locked() as data:
            data[job_id] = record

    def get(self, job_id: str) -> dict[str, typing.Any]:
        with self._locked() as data:
            if job_id not in data:
                raise JobNotFound(f"no job {job_id!r} in the job registry {self.path}")
            return dict(data[job_id])

    def find_key(self, backend: str, key: str) -> typing.Optional[str]:
        """The id of the job submitted to ``backend`` with idempotency key ``key``, if any."""
        with self._locked() as data:
            for job_id, rec in data.items():
                if rec.get("backend") == backend and rec.get("key") == key:
                    return job_id
        return None
