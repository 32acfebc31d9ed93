"""The ``sfapi`` backend: NERSC's Superfacility API (v1.2), following its published OpenAPI schema.

- Auth: an OAuth2 access token sent as ``Authorization: Bearer``; either given
  (``access_token``) or obtained with the client-credentials grant at ``token_url``
  (``client_id`` + ``client_secret``, sent as ``client_secret_post``) and renewed when it
  expires or a request answers 401. (NERSC's production token endpoint wants a signed
  ``private_key_jwt`` client assertion instead of a secret; mint a token with NERSC's tools
  and pass it as ``access_token`` there.)
- Submit: ``POST compute/jobs/{machine}`` (form: ``job`` = the script, ``isPath=false``)
  answers ``{task_id, status, error}``; ``GET tasks/{task_id}`` is polled until its
  ``result`` (a JSON string with ``jobid``) appears.
- State: ``GET compute/jobs/{machine}/{jobid}?sacct=true`` -> ``{status, output: [row], error}``
  with sacct's columns (``state``, ``exitcode`` "3:0", ``jobname``, ``comment``...). Right
  after a submit a job can be missing from that answer (sfapi_client issue #93): it is
  reported PENDING for :data:`NOT_FOUND_GRACE` seconds before it counts as not found.
- Cancel: ``DELETE compute/jobs/{machine}/{jobid}``.
- Files: ``PUT utilities/upload/{machine}/{path}`` (multipart ``file``) and
  ``GET utilities/download/{machine}/{path}?binary=true`` (base64 in ``file``).

NERSC is not reachable from the test machines; the tests run this backend against
``tests/sfapi_standin.py``, a local server built from the same schema.
"""
from __future__ import annotations

import base64
import datetime
import json
import time
import typing

import requests

from hpc_client.backends import NativeStatus, slurm_state
from hpc_client.errors import AuthError, ConfigError, HPCError, JobNotFound, StagingError
from hpc_client.job import JobSpec, JobState
from hpc_client.staging import StagedJob
from hpc_client.transport import RetryPolicy, Secret, Session

MACHINES = ("perlmutter", "dtns", "dtn01")
NOT_FOUND_GRACE = 60.0
TASK_TIMEOUT = 120.0


class _BearerAuth(requests.auth.AuthBase):
    """Adds the access token; fetches (and renews) it with the client-credentials grant."""

    def __init__(self, token_url: typing.Optional[str], client_id: typing.Optional[str],
                 client_secret: typing.Optional[Secret], access_token: typing.Optional[Secret],
                 policy: RetryPolicy) -> None:
        self.token_url, self.client_id, self.client_secret = token_url, client_id, client_secret
        self.token = access_token
        self.expires = float("inf") if access_token else 0.0
        self.policy = policy

    def renew(self) -> None:
        if not (self.token_url and self.client_id and self.client_secret):
            raise AuthError("the Superfacility API rejected the access token and there are no client "
                            "credentials (SFAPI_TOKEN_URL, SFAPI_CLIENT_ID, SFAPI_CLIENT_SECRET) to get a new one")
        session = Session(self.token_url, self.policy)
        session.secrets.append(self.client_secret.value)
        r = session.request("POST", self.token_url, data={
            "grant_type": "client_credentials", "client_id": self.client_id,
            "client_secret": self.client_secret.value})
        if r.status_code in (400, 401, 403):
            raise AuthError(f"the token endpoint {self.token_url} refused client {self.client_id!r} "
                            f"(HTTP {r.status_code}): the client id or secret is wrong or expired")
        if not r.ok:
            raise HPCError(f"token endpoint {self.token_url}: HTTP {r.status_code}")
        body = r.json()
        self.token = Secret(body["access_token"])
        self.expires = time.time() + float(body.get("expires_in", 600)) - 30

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.token is None or time.time() >= self.expires:
            self.renew()
        assert self.token is not None
        r.headers["Authorization"] = f"Bearer {self.token.value}"
        return r


class SfapiStager:
    """Job directories under ``remote_dir`` on ``machine``, moved by upload/download."""

    def __init__(self, backend: "SfapiBackend", remote_dir: str) -> None:
        self.backend = backend
        self.node_root = remote_dir.rstrip("/")

    def _path(self, rel: str) -> str:
        return f"{self.backend.machine}/{self.node_root}/{rel}"

    def put_bytes(self, rel: str, data: bytes) -> None:
        body = self.backend.call("PUT", f"utilities/upload/{self._path(rel)}",
                                 files={"file": (rel.rsplit("/", 1)[-1], data)})
        if body.get("status") == "ERROR":
            raise StagingError(f"upload of {rel} failed: {body.get('error')}")

    def put_file(self, local: str, rel: str) -> None:
        with open(local, "rb") as fp:
            self.put_bytes(rel, fp.read())

    def read_bytes(self, rel: str, tail: typing.Optional[int] = None) -> typing.Optional[bytes]:
        body = self.backend.call("GET", f"utilities/download/{self._path(rel)}", params={"binary": "true"})
        if body.get("status") == "ERROR":
            return None
        data = body.get("file") or ""
        raw = base64.b64decode(data) if body.get("is_binary") else data.encode()
        return raw[-tail:] if tail else raw

    def get_file(self, rel: str, local: str) -> None:
        data = self.read_bytes(rel)
        if data is None:
            raise StagingError(f"{rel} cannot be downloaded from {self.backend.machine}:{self.node_root}")
        with open(local, "wb") as fp:
            fp.write(data)


class SfapiBackend:
    """Jobs on ``machine`` through the Superfacility API at ``url`` (e.g. .../api/v1.2)."""

    name = "sfapi"

    def __init__(self, url: typing.Optional[str] = None, machine: str = "perlmutter",
                 token_url: typing.Optional[str] = None, client_id: typing.Optional[str] = None,
                 client_secret: typing.Optional[Secret] = None, access_token: typing.Optional[Secret] = None,
                 remote_dir: typing.Optional[str] = None, policy: RetryPolicy = RetryPolicy(),
                 **_: typing.Any) -> None:
        if not url:
            raise ConfigError("sfapi needs the API URL (--url or SFAPI_URL)")
        if not remote_dir:
            raise ConfigError("sfapi needs a staging directory on the machine (SFAPI_REMOTE_DIR)")
        if not access_token and not (token_url and client_id and client_secret):
            raise ConfigError("sfapi needs SFAPI_ACCESS_TOKEN, or SFAPI_TOKEN_URL + SFAPI_CLIENT_ID + "
                              "SFAPI_CLIENT_SECRET")
        if machine not in MACHINES:
            raise ConfigError(f"sfapi machine must be one of {', '.join(MACHINES)}, not {machine!r}")
        self.url, self.machine, self.token_url, self.client_id = url, machine, token_url, client_id
        self.session = Session(url, policy)
        self.auth = _BearerAuth(token_url, client_id, client_secret, access_token, policy)
        self.session.http.auth = self.auth
        self.stager = SfapiStager(self, remote_dir)
        self._submitted: dict[str, float] = {}

    def call(self, method: str, path: str, **kw: typing.Any) -> dict[str, typing.Any]:
        """One API call; a 401 renews the token once, then is an :class:`AuthError`."""
        r = self.session.request(method, path, **kw)
        if r.status_code == 401 and self.auth.client_secret:
            self.auth.renew()
            r = self.session.request(method, path, **kw)
        if r.status_code in (401, 403):
            raise AuthError(f"the Superfacility API at {self.url} rejected the access token (HTTP {r.status_code}): "
                            "it is wrong or expired")
        if r.status_code == 404:
            raise JobNotFound(f"{method} {path}: not found")
        if not r.ok:
            raise HPCError(f"Superfacility API {method} {path}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()

    def header(self, spec: JobSpec, node_dir: str) -> list[str]:
        res = spec.resources
        lines = [f"#SBATCH --job-name={spec.job_name}", f"#SBATCH --comment=emedge-key={spec.idempotency_key}",
                 f"#SBATCH --chdir={node_dir}", f"#SBATCH --output={node_dir}/.emedge/stdout",
                 f"#SBATCH --error={node_dir}/.emedge/stderr", f"#SBATCH --time={res.time_limit_min}",
                 f"#SBATCH --cpus-per-task={res.cpus}"]
        if res.partition:
            lines.append(f"#SBATCH --qos={res.partition}")
        lines += [f"#SBATCH --{k.replace('_', '-')}={v}" for k, v in spec.native.items()]
        return lines

    def describe(self) -> dict[str, typing.Any]:
        return {"url": self.url, "machine": self.machine, "token_url": self.token_url, "client_id": self.client_id,
                "remote_dir": self.stager.node_root}

    def submit(self, spec: JobSpec, staged: StagedJob) -> str:
        body = self.call("POST", f"compute/jobs/{self.machine}", data={"job": staged.wrapper, "isPath": "false"})
        if body.get("status") == "ERROR" or not body.get("task_id"):
            raise HPCError(f"the Superfacility API refused the job: {body.get('error')}")
        result = self._task_result(str(body["task_id"]))
        if result.get("status") == "error" or result.get("jobid") is None:
            raise HPCError(f"job submission failed on {self.machine}: {result.get('error') or result}")
        self._submitted[str(result["jobid"])] = time.time()
        return str(result["jobid"])

    def _task_result(self, task_id: str) -> dict[str, typing.Any]:
        deadline, delay = time.monotonic() + TASK_TIMEOUT, 0.1
        while time.monotonic() < deadline:
            task = self.call("GET", f"tasks/{task_id}")
            if str(task.get("status", "")).lower() in ("error", "failed"):
                raise HPCError(f"task {task_id} failed: {task.get('result')}")
            if task.get("result") is not None:
                return json.loads(task["result"])
            time.sleep(delay)
            delay = min(2.0, delay * 1.5)
        raise HPCError(f"task {task_id} gave no result within {TASK_TIMEOUT} s")

    def _rows(self, path: str) -> list[dict[str, str]]:
        body = self.call("GET", path, params={"sacct": "true"})
        if body.get("status") == "ERROR":
            raise HPCError(f"Superfacility API: {body.get('error')}")
        return list(body.get("output") or [])

    def find(self, key: str) -> typing.Optional[str]:
        ids = [row["jobid"] for row in self._rows(f"compute/jobs/{self.machine}")
               if row.get("comment") == f"emedge-key={key}" or str(row.get("jobname", "")).endswith("." + key)]
        return max(ids, key=int) if ids else None

    def status(self, native_id: str) -> NativeStatus:
        try:
            rows = self._rows(f"compute/jobs/{self.machine}/{native_id}")
        except JobNotFound:
            rows = []
        rows = [r for r in rows if r.get("jobid") == native_id] or rows[:1]
        if not rows:
            if time.time() - self._submitted.get(native_id, 0.0) < NOT_FOUND_GRACE:
                return NativeStatus(JobState.PENDING, reason="not yet listed")
            raise JobNotFound(f"{self.machine} does not know job {native_id}")
        row = rows[0]
        state = slurm_state(row.get("state", ""))
        code = _exitcode(row.get("exitcode")) if state.terminal else None
        return NativeStatus(state, code, _when(row.get("submit")), _when(row.get("start")),
                            _when(row.get("end")) if state.terminal else None,
                            "" if row.get("reason") in (None, "None") else row["reason"])

    def cancel(self, native_id: str) -> None:
        body = self.call("DELETE", f"compute/jobs/{self.machine}/{native_id}")
        if body.get("status") == "ERROR":
            raise HPCError(f"cancel of {native_id} failed: {body.get('error')}")


def _exitcode(text: typing.Optional[str]) -> typing.Optional[int]:
    """sacct's ``code:signal`` -> the exit status (128 + signal when killed)."""
    if not text:
        return None
    code, _, sig = text.partition(":")
    return 128 + int(sig) if sig and int(sig) else int(code)


def _when(text: typing.Optional[str]) -> typing.Optional[float]:
    if not text or text in ("Unknown", "None"):
        return None
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
