"""The ``slurmrest`` backend: Slurm's REST daemon (slurmrestd) with JWT authentication.

It negotiates the newest OpenAPI version the server offers out of :data:`SUPPORTED`
(from ``/openapi/v3``, else by probing ``ping``), and keeps every version-specific shape
in :class:`Dialect`: v0.0.36-38 (Slurm 20.11-22.05: plain numbers, ``environment`` as an
object), v0.0.39+ (Slurm 23.02+: ``{"set", "number"}`` numbers, ``environment`` as a list,
``job_state`` as a list, ``exit_code`` as an object) and v0.0.41+ (``script`` inside ``job``).
v0.0.36-38 are exercised against a real slurmrestd in the tests; v0.0.39+ only by their
documented shapes.

slurmrestd reports many errors as HTTP 500 with an ``errors[]`` list: a bad or expired
token shows up as error number -1 ("Unspecified error", "Zero Bytes were transmitted"),
an unknown job as 2017. Both are turned into this package's errors here.
"""
from __future__ import annotations

import base64
import json
import os
import re
import time
import typing

from hpc_client.backends import NativeStatus, slurm_state
from hpc_client.errors import AuthError, ConfigError, HPCError, JobNotFound
from hpc_client.job import JobSpec
from hpc_client.staging import SharedDirStager, StagedJob
from hpc_client.transport import RetryPolicy, Secret, Session

SUPPORTED = ("v0.0.42", "v0.0.41", "v0.0.40", "v0.0.39", "v0.0.38", "v0.0.37", "v0.0.36")
JOB_NOT_FOUND = 2017
AUTH_HINTS = ("Zero Bytes were transmitted", "Protocol authentication error", "Authentication failure")


def _vtuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.lstrip("v").split("."))


def _number(x: typing.Any) -> typing.Optional[float]:
    """A Slurm number (plain, or v0.0.39+'s ``{"set": true, "number": n}``); None when unset or 0."""
    if isinstance(x, dict):
        x = x.get("number") if x.get("set", True) and not x.get("infinite") else None
    return float(x) if x else None


class Dialect:
    """Everything that differs between OpenAPI versions: the submit body and the job record."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.wrapped_numbers = _vtuple(version) >= (0, 0, 39)
        self.script_in_job = _vtuple(version) >= (0, 0, 41)

    def _num(self, n: int) -> typing.Any:
        return {"set": True, "infinite": False, "number": int(n)} if self.wrapped_numbers else int(n)

    def submit_body(self, spec: JobSpec, staged: StagedJob, partition: typing.Optional[str]) -> dict[str, typing.Any]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **spec.environment}
        res = spec.resources
        job: dict[str, typing.Any] = {
            "name": spec.job_name, "comment": f"emedge-key={spec.idempotency_key}",
            "current_working_directory": staged.node_dir, "standard_output": staged.stdout,
            "standard_error": staged.stderr, "cpus_per_task": int(res.cpus),
            "time_limit": self._num(res.time_limit_min),
            "environment": [f"{k}={v}" for k, v in env.items()] if self.wrapped_numbers else env}
        if res.partition or partition:
            job["partition"] = res.partition or partition
        if res.memory_mb:
            job["memory_per_node"] = self._num(res.memory_mb)
        job.update(spec.native)
        if self.script_in_job:
            return {"job": job | {"script": staged.wrapper}}
        return {"script": staged.wrapper, "job": job}

    @staticmethod
    def exit_code(raw: typing.Any) -> typing.Optional[int]:
        """The job's exit status: v0.0.36-38 give the raw wait status (``exit 3`` -> 768)."""
        if isinstance(raw, dict):
            if "SIGNALED" in (raw.get("status") or []):
                sig = _number((raw.get("signal") or {}).get("id"))
                return 128 + int(sig or 0)
            n = _number(raw.get("return_code"))
            return int(n or 0)
        if raw is None:
            return None
        raw = int(raw)
        return 128 + (raw & 0x7F) if raw & 0x7F else raw >> 8

    def native(self, job: dict[str, typing.Any]) -> NativeStatus:
        state = job.get("job_state") or ""
        if isinstance(state, list):
            state = state[0] if state else ""
        mapped = slurm_state(state)
        code = self.exit_code(job.get("exit_code")) if mapped.terminal else None
        return NativeStatus(mapped, code, _number(job.get("submit_time")), _number(job.get("start_time")),
                            _number(job.get("end_time")) if mapped.terminal else None,
                            "" if job.get("state_reason") in (None, "None") else str(job["state_reason"]))


class SlurmRestBackend:
    """Jobs through slurmrestd at ``url`` as ``user`` with JWT ``token``; job directories under
    ``staging_dir`` here and ``node_staging_dir`` on the nodes (a shared file system)."""

    name = "slurmrest"

    def __init__(self, url: typing.Optional[str] = None, user: typing.Optional[str] = None,
                 token: typing.Optional[Secret] = None, staging_dir: str = "",
                 node_staging_dir: typing.Optional[str] = None, partition: typing.Optional[str] = None,
                 api_version: typing.Optional[str] = None, policy: RetryPolicy = RetryPolicy(),
                 **_: typing.Any) -> None:
        for value, what in ((url, "a URL (--url or SLURM_REST_URL)"), (user, "a user (SLURM_REST_USER)"),
                            (token, "a JWT (SLURM_REST_TOKEN or SLURM_REST_TOKEN_FILE)")):
            if not value:
                raise ConfigError(f"slurmrest needs {what}")
        assert url and user and token
        if api_version and api_version not in SUPPORTED:
            raise ConfigError(f"api_version {api_version} is not one of {', '.join(SUPPORTED)}")
        self.url, self.user, self._token = url, user, token
        self.partition = partition
        self.stager = SharedDirStager(staging_dir, node_staging_dir)
        self.session = Session(url, policy, {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token})
        self._pinned = api_version
        self._dialect: typing.Optional[Dialect] = None

    # -- connection -------------------------------------------------------------------
    @property
    def dialect(self) -> Dialect:
        """The negotiated dialect; the first use also checks the token with a ping."""
        if self._dialect is None:
            version = self._pinned or self._negotiate()
            self._dialect = Dialect(version)
            self._call("GET", f"slurm/{version}/ping")
        return self._dialect

    def _negotiate(self) -> str:
        r = self.session.request("GET", "openapi/v3")
        offered: set[str] = set()
        if r.ok:
            try:
                paths = r.json().get("paths", {})
            except ValueError:
                paths = {}
            offered = {m.group(1) for p in paths for m in [re.match(r"/slurm/(v\d+\.\d+\.\d+)/", p)] if m}
        if not offered:
            for version in SUPPORTED:
                if self.session.request("GET", f"slurm/{version}/ping").status_code != 404:
                    offered = {version}
                    break
        for version in SUPPORTED:
            if version in offered:
                return version
        raise HPCError(f"slurmrestd at {self.url} offers {sorted(offered) or 'no slurm API'}; "
                       f"this client speaks {', '.join(SUPPORTED)}")

    def _auth_message(self, detail: str) -> str:
        msg = f"slurmrestd at {self.url} rejected the token for user {self.user!r} ({detail})"
        exp = _jwt_expiry(self._token.value)
        if exp is not None and exp < time.time():
            msg += f": the token expired at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(exp))}"
        else:
            msg += ": the token is wrong, expired, or not for this user"
        return msg + f"; mint a new one on the cluster (scontrol token username={self.user}) and set SLURM_REST_TOKEN"

    def _call(self, method: str, path: str, **kw: typing.Any) -> dict[str, typing.Any]:
        r = self.session.request(method, path, **kw)
        if r.status_code in (401, 403):
            raise AuthError(self._auth_message(f"HTTP {r.status_code}"))
        try:
            body = r.json()
        except ValueError:
            body = {}
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        if r.status_code < 400 and (not errors or body.get("job_id")):
            return body             # a submit can carry notes in errors[], e.g. "Job is in held state"
        numbers = {e.get("error_number") for e in errors}
        text = self.session.scrub("; ".join(str(e.get("description") or e.get("error")) for e in errors)
                                  or r.text[:300] or r.reason)
        if JOB_NOT_FOUND in numbers:
            raise JobNotFound(f"slurmrestd does not know that job ({text})")
        if r.status_code >= 500 and (numbers & {-1} or any(h in text for h in AUTH_HINTS)):
            raise AuthError(self._auth_message(f"HTTP {r.status_code}: {text}"))
        raise HPCError(f"slurmrestd {method} {path.split('?')[0]}: HTTP {r.status_code}: {text}")

    # -- the five verbs ------------------------------------------------------------------
    def header(self, spec: JobSpec, node_dir: str) -> list[str]:
        return []

    def describe(self) -> dict[str, typing.Any]:
        return {"url": self.url, "user": self.user, "staging_dir": self.stager.local_root,
                "node_staging_dir": self.stager.node_root, "partition": self.partition, "api_version": self._pinned}

    def submit(self, spec: JobSpec, staged: StagedJob) -> str:
        d = self.dialect
        body = self._call("POST", f"slurm/{d.version}/job/submit", json=d.submit_body(spec, staged, self.partition))
        if not body.get("job_id"):
            raise HPCError(f"slurmrestd accepted the job but gave no job id: {json.dumps(body)[:300]}")
        return str(body["job_id"])

    def find(self, key: str) -> typing.Optional[str]:
        body = self._call("GET", f"slurm/{self.dialect.version}/jobs")
        ids = [int(j["job_id"]) for j in body.get("jobs") or []
               if j.get("comment") == f"emedge-key={key}" or str(j.get("name", "")).endswith("." + key)]
        return str(max(ids)) if ids else None

    def status(self, native_id: str) -> NativeStatus:
        body = self._call("GET", f"slurm/{self.dialect.version}/job/{native_id}")
        jobs = body.get("jobs") or []
        if not jobs:
            raise JobNotFound(f"slurmrestd does not know job {native_id}")
        return self.dialect.native(jobs[0])

    def cancel(self, native_id: str) -> None:
        """Cancel (slurmrestd answers 200 for a job that has already ended)."""
        self._call("DELETE", f"slurm/{self.dialect.version}/job/{native_id}")


def _jwt_expiry(token: str) -> typing.Optional[float]:
    """The ``exp`` claim of a JWT (read, not verified), or None."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None
