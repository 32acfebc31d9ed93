"""A local stand-in for NERSC's Superfacility API (SFAPI v1.2), for tests only.

NERSC cannot be reached from the test machines, so this small server implements the part
of SFAPI's published OpenAPI schema (https://api.nersc.gov/api/v1.2/openapi.json, as
captured in sfapi_client's generated models) that ``hpc_client.backends.sfapi`` uses,
with the same paths, form fields and JSON shapes:

- ``POST /token`` - OAuth2 client-credentials grant -> ``{access_token, token_type, expires_in}``
- ``POST compute/jobs/{machine}`` (form ``job``, ``isPath``) -> ``{task_id, status, error}``
- ``GET tasks/{id}`` -> ``{id, status, result}``, ``result`` a JSON string with ``jobid``
- ``GET compute/jobs/{machine}[/{jobid}]?sacct=true`` -> ``{status, output: [sacct rows], error}``
- ``DELETE compute/jobs/{machine}/{jobid}`` -> ``{status, output, error}``
- ``PUT utilities/upload/{machine}/{path}`` (multipart ``file``) -> ``{status, output, error}``
- ``GET utilities/download/{machine}/{path}?binary=true`` -> ``{status, file (base64), is_binary, error}``

Jobs run as local ``bash`` processes, honouring the ``#SBATCH`` lines ``--job-name``,
``--comment``, ``--chdir``, ``--output`` and ``--error``; the "machine" file system is this
machine's. Two faults can be switched on: ``drop_next_submit`` (the submit is carried out but
the connection is closed before the answer), and ``hide_jobs_for`` (new jobs are missing from
the job listing for that many seconds, as in sfapi_client issue #93).
"""
from __future__ import annotations

import base64
import datetime
import email.parser
import email.policy
import http.server
import itertools
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import typing
import urllib.parse

API = "/api/v1.2/"
MACHINES = ("perlmutter", "dtns", "dtn01")


class _Job:
    def __init__(self, jobid: str, script: str) -> None:
        self.jobid, self.script = jobid, script
        opts = dict(re.findall(r"^#SBATCH\s+--([\w-]+)=(\S+)", script, re.M))
        self.name, self.comment = opts.get("job-name", "job"), opts.get("comment", "")
        self.chdir = opts.get("chdir", tempfile.gettempdir())
        self.output, self.error = opts.get("output", os.devnull), opts.get("error", os.devnull)
        self.submit, self.start, self.end = time.time(), None, None  # type: typing.Optional[float]
        self.state, self.exitcode = "PENDING", "0:0"
        self.proc: typing.Optional[subprocess.Popen[bytes]] = None

    def row(self) -> dict[str, str]:
        def iso(t: typing.Optional[float]) -> str:
            return datetime.datetime.fromtimestamp(t).isoformat(timespec="seconds") if t else "Unknown"

        return {"jobid": self.jobid, "jobidraw": self.jobid, "jobname": self.name, "comment": self.comment,
                "state": self.state, "exitcode": self.exitcode, "submit": iso(self.submit), "start": iso(self.start),
                "end": iso(self.end), "workdir": self.chdir, "reason": "None"}


class SfapiStandin:
    """``start()`` it, point the backend at ``url`` / ``token_url``, ``stop()`` it."""

    def __init__(self, client_id: str = "emedge-test", client_secret: str = "s3cret", token_lifetime: float = 600,
                 start_delay: float = 0.3) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.token_lifetime, self.start_delay = token_lifetime, start_delay
        self.tokens: dict[str, float] = {}
        self.jobs: dict[str, _Job] = {}
        self.tasks: dict[str, tuple[float, dict[str, typing.Any]]] = {}
        self.drop_next_submit = False
        self.hide_jobs_for = 0.0
        self.submits = 0
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1.2"

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def start(self) -> "SfapiStandin":
        self._thread.start()
        return self

    def stop(self) -> None:
        for job in self.jobs.values():
            if job.proc and job.proc.poll() is None:
                os.killpg(job.proc.pid, signal.SIGKILL)
                job.proc.wait()
        self._server.shutdown()
        self._server.server_close()

    # -- the scheduler ------------------------------------------------------------------
    def _run(self, job: _Job) -> None:
        time.sleep(self.start_delay)
        with self._lock:
            if job.state != "PENDING":
                return
            path = os.path.join(tempfile.gettempdir(), f"sfapi-standin-{job.jobid}.sh")
            with open(path, "w") as fp:
                fp.write(job.script)
            os.makedirs(os.path.dirname(job.output) or ".", exist_ok=True)
            with open(job.output, "wb") as out, open(job.error, "wb") as err:
                job.proc = subprocess.Popen(["bash", path], cwd=job.chdir if os.path.isdir(job.chdir) else None,
                                            stdout=out, stderr=err, start_new_session=True)
            job.state, job.start = "RUNNING", time.time()
        rc = job.proc.wait()
        with self._lock:
            job.end = time.time()
            if job.state == "RUNNING":
                job.state = "COMPLETED" if rc == 0 else "FAILED"
            job.exitcode = f"{rc}:0" if rc >= 0 else f"0:{-rc}"

    def _cancel(self, job: _Job) -> None:
        with self._lock:
            if job.state == "PENDING":
                job.state, job.end = "CANCELLED by 0", time.time()
            elif job.state == "RUNNING":
                job.state = "CANCELLED by 0"
                assert job.proc is not None
                os.killpg(job.proc.pid, signal.SIGTERM)

    # -- HTTP ----------------------------------------------------------------------------
    def _handler(self) -> type:
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: typing.Any) -> None:
                pass

            def _send(self, code: int, body: typing.Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _authorized(self) -> bool:
                auth = self.headers.get("Authorization", "")
                token = auth[7:] if auth.startswith("Bearer ") else ""
                if standin.tokens.get(token, 0) > time.time():
                    return True
                self._send(401, {"detail": "Not authenticated"})
                return False

            def _route(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if method == "POST" and url.path == "/token":
                    return self._token()
                if not url.path.startswith(API):
                    return self._send(404, {"detail": "Not Found"})
                if not self._authorized():
                    return None
                parts = url.path[len(API):].split("/")
                if parts[0] == "tasks" and method == "GET" and len(parts) == 2:
                    return self._task(parts[1])
                if parts[:2] == ["compute", "jobs"] and len(parts) >= 3 and parts[2] in MACHINES:
                    return self._jobs(method, parts[3] if len(parts) > 3 else None)
                if parts[0] == "utilities" and len(parts) > 3 and parts[2] in MACHINES:
                    path = "/" + "/".join(parts[3:]).lstrip("/")
                    if parts[1] == "upload" and method == "PUT":
                        return self._upload(path)
                    if parts[1] == "download" and method == "GET":
                        return self._download(path, query.get("binary") == "true")
                return self._send(404, {"detail": "Not Found"})

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            def _token(self) -> None:
                form = dict(urllib.parse.parse_qsl(self._body().decode()))
                if form.get("grant_type") != "client_credentials":
                    return self._send(400, {"error": "unsupported_grant_type"})
                if form.get("client_id") != standin.client_id or form.get("client_secret") != standin.client_secret:
                    return self._send(401, {"error": "invalid_client"})
                token = secrets.token_urlsafe(24)
                standin.tokens[token] = time.time() + standin.token_lifetime
                self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": standin.token_lifetime})

            def _task(self, task_id: str) -> None:
                if task_id not in standin.tasks:
                    return self._send(404, {"detail": "task not found"})
                ready, result = standin.tasks[task_id]
                done = time.time() >= ready
                self._send(200, {"id": task_id, "status": "completed" if done else "new",
                                 "result": json.dumps(result) if done else None})

            def _jobs(self, method: str, jobid: typing.Optional[str]) -> None:
                if method == "POST" and jobid is None:
                    form = dict(urllib.parse.parse_qsl(self._body().decode()))
                    if form.get("isPath", "false") != "false" or not form.get("job", "").startswith("#!"):
                        return self._send(200, {"task_id": None, "status": "ERROR", "error": "job must be a script"})
                    with standin._lock:
                        jid = str(next(standin._ids))
                        job = standin.jobs[jid] = _Job(jid, form["job"])
                        task_id = secrets.token_hex(8)
                        standin.tasks[task_id] = (time.time() + 0.15, {"status": "ok", "jobid": jid})
                        standin.submits += 1
                        drop, standin.drop_next_submit = standin.drop_next_submit, False
                    threading.Thread(target=standin._run, args=(job,), daemon=True).start()
                    if drop:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return None
                    return self._send(200, {"task_id": task_id, "status": "OK", "error": None})
                visible = [j for j in standin.jobs.values() if time.time() - j.submit >= standin.hide_jobs_for]
                if method == "GET":
                    rows = [j.row() for j in visible if jobid is None or j.jobid == jobid]
                    return self._send(200, {"status": "OK", "output": rows, "error": None})
                if method == "DELETE" and jobid is not None:
                    if jobid not in standin.jobs:
                        return self._send(200, {"status": "ERROR", "output": [], "error": f"Invalid job id {jobid}"})
                    standin._cancel(standin.jobs[jobid])
                    return self._send(200, {"status": "OK", "output": [], "error": None})
                return self._send(405, {"detail": "Method Not Allowed"})

            def _upload(self, path: str) -> None:
                raw = self._body()
                msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
                parts = [p for p in msg.iter_parts() if p.get_param("name", header="content-disposition") == "file"]
                if not parts:
                    return self._send(422, {"detail": [{"loc": ["body", "file"], "msg": "field required",
                                                        "type": "value_error.missing"}]})
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as fp:
                    fp.write(parts[0].get_payload(decode=True) or b"")
                self._send(200, {"status": "OK", "output": f"uploaded {shlex.quote(path)}", "error": None})

            def _download(self, path: str, binary: bool) -> None:
                try:
                    with open(path, "rb") as fp:
                        data = fp.read()
                except OSError as e:
                    return self._send(200, {"status": "ERROR", "file": None, "is_binary": binary, "error": e.strerror})
                file = base64.b64encode(data).decode() if binary else data.decode(errors="replace")
                self._send(200, {"status": "OK", "file": file, "is_binary": binary, "error": None})

        return Handler
