"""hpc_client against the real one-node Slurm + slurmrestd started by scripts/start-slurm.sh.

Faults are caused for real: slurmrestd is killed and restarted while a job runs; a wrong
token is sent; a loopback proxy (:class:`FaultProxy`) really drops the answer of a submit
after slurmrestd has carried it out, and really answers 503 to GETs. These tests fail
(not skip) when CI=true and Slurm is not up.
"""
from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import typing
import urllib.parse

import h5py
import numpy as np
import pytest
import requests

from emedge_core.jobs import reduce_emd_job, retrain_job
from hpc_client import (AuthError, HPCError, JobFailed, JobNotFound, JobSpec, JobState, RetryPolicy, Secret,
                        Unreachable, open_client)
from hpc_client.backends.slurmrest import SlurmRestBackend
from hpc_client.client import Client
from hpc_client.registry import Registry

pytestmark = pytest.mark.slurm
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM_BASE = os.environ.get("SLURM_BASE", "/tmp/emedge-slurm")


@pytest.fixture
def client(slurm: dict[str, str], tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("EMEDGE_HPC_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("EMEDGE_HPC_STAGING", str(tmp_path / "staging"))
    monkeypatch.setenv("EMEDGE_HPC_CONFIG", str(tmp_path / "no-config.toml"))
    c = open_client("slurmrest")
    c.poll, c.max_poll = 0.1, 1.0
    return c


def _jobs_with_key(slurm: dict[str, str], key: str) -> list[int]:
    r = requests.get(slurm["SLURM_REST_URL"] + "/slurm/v0.0.38/jobs", timeout=10, headers={
        "X-SLURM-USER-NAME": slurm["SLURM_REST_USER"], "X-SLURM-USER-TOKEN": slurm["SLURM_REST_TOKEN"]})
    return [j["job_id"] for j in r.json()["jobs"] if j.get("comment") == f"emedge-key={key}"]


def test_round_trip_stage_in_run_fetch(client: Client, tmp_path: typing.Any) -> None:
    src = tmp_path / "numbers.txt"
    src.write_text("1\n2\n3\n")
    spec = JobSpec(script="awk '{s+=$1} END {print s}' numbers.txt > sum.txt\necho working >&2\n",
                   stage_in=[str(src)], stage_out=["sum.txt"], name="sum")
    job = client.submit(spec)
    assert job.id.startswith("slurmrest:") and job.state in (JobState.PENDING, JobState.RUNNING)
    states: list[JobState] = []
    done = client.wait(job.id, timeout=60, callback=lambda j: states.append(j.state))
    assert done.state == JobState.COMPLETED and done.exit_code == 0, done
    assert done.outputs == ["sum.txt"] and "working" in done.stderr_tail
    assert states[-1] == JobState.COMPLETED
    files = client.fetch(job.id, str(tmp_path / "back"))
    assert [open(f).read() for f in files] == ["6\n"]
    assert client.backend.dialect.version == "v0.0.38"          # the newest this Slurm 22.05 offers


def test_failing_job_reports_failed_exit_code_and_stderr(client: Client) -> None:
    job = client.submit(JobSpec(script="echo 'something broke: no such detector' >&2\nexit 3\n"))
    done = client.wait(job.id, timeout=60)
    assert done.state == JobState.FAILED and done.exit_code == 3
    assert "no such detector" in done.stderr_tail
    with pytest.raises(JobFailed, match="exit code 3") as err:
        client.wait(job.id, check=True)
    assert "no such detector" in str(err.value)


def test_slurmrestd_killed_and_restarted_while_job_runs(client: Client, slurm: dict[str, str]) -> None:
    job = client.submit(JobSpec(script="sleep 4\necho survived > out.txt\n", stage_out=["out.txt"]))
    while client.status(job.id).state == JobState.PENDING:
        time.sleep(0.1)
    pid_file = os.path.join(SLURM_BASE, "run", "slurmrestd.pid")
    with open(pid_file) as fp:
        pid = int(fp.read())
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
            time.sleep(0.05)
        except ProcessLookupError:
            break
    impatient = SlurmRestBackend(url=slurm["SLURM_REST_URL"], user=slurm["SLURM_REST_USER"],
                                 token=Secret(slurm["SLURM_REST_TOKEN"]), staging_dir="/tmp",
                                 policy=RetryPolicy(connect=0, read=0, status=0))
    with pytest.raises(Unreachable, match="failed after retries"):
        impatient.status(job.id.split(":")[1])

    def restart() -> None:
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "start-slurm.sh")], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)

    timer = threading.Timer(1.5, restart)
    timer.start()
    try:
        done = client.wait(job.id, timeout=90)
    finally:
        timer.join()
    assert done.state == JobState.COMPLETED, done
    assert [open(f).read() for f in client.fetch(job.id, os.path.join(client.backend.stager.local_root, "back"))] \
        == ["survived\n"]


def test_wrong_token_is_a_clear_auth_error(slurm: dict[str, str], tmp_path: typing.Any) -> None:
    wrong = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjk5OTk5OTk5OTksInN1biI6InJvb3QifQ.not-the-signature"
    backend = SlurmRestBackend(url=slurm["SLURM_REST_URL"], user=slurm["SLURM_REST_USER"], token=Secret(wrong),
                               staging_dir=str(tmp_path))
    client = Client(backend, Registry(str(tmp_path / "reg.json")))
    with pytest.raises(AuthError, match="rejected the token for user") as err:
        client.submit(JobSpec(script="true"))
    assert wrong not in str(err.value) and "scontrol token" in str(err.value)
    expired = "x." + __import__("base64").urlsafe_b64encode(b'{"exp": 1000, "sun": "root"}').decode() + ".y"
    backend = SlurmRestBackend(url=slurm["SLURM_REST_URL"], user=slurm["SLURM_REST_USER"], token=Secret(expired),
                               staging_dir=str(tmp_path))
    with pytest.raises(AuthError, match="the token expired at 1970"):
        backend.status("1")


def test_cli_wrong_token_one_line_and_token_never_printed(slurm: dict[str, str], tmp_path: typing.Any) -> None:
    script = tmp_path / "job.sh"
    script.write_text("echo hi\n")
    env = os.environ | {"SLURM_REST_TOKEN": "wrong-token-value-123", "EMEDGE_HPC_REGISTRY": str(tmp_path / "r.json"),
                        "EMEDGE_HPC_STAGING": str(tmp_path / "staging")}
    r = subprocess.run([sys.executable, "-m", "emedge_core", "jobs", "submit", "--backend", "slurmrest",
                        "--script", str(script)], capture_output=True, text=True, env=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("emedge: error: AuthError: slurmrestd at")
    assert "wrong-token-value-123" not in r.stdout + r.stderr


def test_cli_submit_wait_status_fetch(slurm: dict[str, str], tmp_path: typing.Any) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\ntr a-z A-Z < in.txt > out.txt\n")
    (tmp_path / "in.txt").write_text("hello slurm\n")
    env = os.environ | {"EMEDGE_HPC_REGISTRY": str(tmp_path / "r.json"), "EMEDGE_HPC_STAGING": str(tmp_path / "st")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "emedge_core", "jobs", *a],  # noqa: E731
                                    capture_output=True, text=True, env=env)
    r = run("submit", "--backend", "slurmrest", "--url", slurm["SLURM_REST_URL"], "--script", str(script),
            "--stage-in", str(tmp_path / "in.txt"), "--stage-out", "out.txt", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["state"] == "COMPLETED" and out["exit_code"] == 0 and out["outputs"] == ["out.txt"]
    assert json.loads(run("status", out["id"], "--json").stdout.splitlines()[-1]) == out
    fetched = json.loads(run("fetch", out["id"], str(tmp_path / "got"), "--json").stdout.splitlines()[-1])
    assert open(fetched["files"][0]).read() == "HELLO SLURM\n"
    assert slurm["SLURM_REST_TOKEN"] not in r.stdout + r.stderr


class FaultProxy:
    """A loopback HTTP proxy in front of slurmrestd that causes real network faults:
    ``drop_submits``: carry out that many submits upstream, then close the client's
    connection without an answer; ``fail_gets``: answer that many GETs with 503."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.drop_submits = 0
        self.fail_gets = 0
        self.submits_forwarded = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: typing.Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "GET" and proxy.fail_gets > 0:
                    proxy.fail_gets -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if self.command == "POST" and self.path.endswith("/job/submit"):
                    proxy.submits_forwarded += 1
                    if proxy.drop_submits > 0:
                        proxy.drop_submits -= 1
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.getheader("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(slurm: dict[str, str]) -> typing.Iterator[FaultProxy]:
    p = FaultProxy(slurm["SLURM_REST_URL"])
    yield p
    p.close()


def test_lost_submit_answer_makes_no_duplicate(client: Client, proxy: FaultProxy, slurm: dict[str, str],
                                               tmp_path: typing.Any) -> None:
    via_proxy = open_client("slurmrest", url=proxy.url)
    spec = JobSpec(script="echo once\n", name="lost")
    assert via_proxy.backend.dialect is not None     # negotiate before the fault
    proxy.drop_submits = 1
    job = via_proxy.submit(spec)
    assert proxy.submits_forwarded == 1                     # the answer was lost, and nothing was resubmitted
    assert _jobs_with_key(slurm, spec.idempotency_key) == [int(job.id.split(":")[1])]
    again = via_proxy.submit(spec)                          # the same key again: still the same job
    assert again.id == job.id and proxy.submits_forwarded == 1
    assert via_proxy.wait(job.id, timeout=60).state == JobState.COMPLETED


def test_503_answers_are_retried(client: Client, proxy: FaultProxy) -> None:
    via_proxy = open_client("slurmrest", url=proxy.url)
    job = via_proxy.submit(JobSpec(script="true\n"))
    proxy.fail_gets = 2
    assert via_proxy.status(job.id).id == job.id
    assert proxy.fail_gets == 0
    proxy.fail_gets = 50
    impatient = SlurmRestBackend(url=proxy.url, user=os.environ["SLURM_REST_USER"],
                                 token=Secret(os.environ["SLURM_REST_TOKEN"]), staging_dir="/tmp",
                                 policy=RetryPolicy(status=1, backoff_factor=0.01))
    with pytest.raises(HPCError, match="HTTP 503"):
        impatient.status(job.id.split(":")[1])


def test_bad_job_description_is_not_an_auth_error(client: Client) -> None:
    with pytest.raises(HPCError, match="HTTP 400") as err:
        client.submit(JobSpec(script="true\n", native={"begin_time": "not a time"}))
    assert not isinstance(err.value, AuthError)


def test_cancel_in_every_state(client: Client) -> None:
    pending = client.submit(JobSpec(script="true\n", native={"hold": True}))
    assert client.status(pending.id).state == JobState.PENDING
    assert client.cancel(pending.id).state == JobState.CANCELLED
    running = client.submit(JobSpec(script="sleep 60\n"))
    while client.status(running.id).state != JobState.RUNNING:
        time.sleep(0.1)
    client.cancel(running.id)
    # Slurm reports the job COMPLETING (RUNNING to us) until slurmd has killed its processes and
    # said so: here 0.2 s, once in CI on a loaded box over 30 s (SIGKILL comes after KillWait, 30 s)
    assert client.wait(running.id, timeout=90).state == JobState.CANCELLED
    finished = client.submit(JobSpec(script="true\n"))
    assert client.wait(finished.id, timeout=60).state == JobState.COMPLETED
    assert client.cancel(finished.id).state == JobState.COMPLETED       # an ended job stays as it ended
    assert client.cancel(pending.id).state == JobState.CANCELLED        # and cancelling twice is harmless
    with pytest.raises(JobNotFound):
        client.cancel("slurmrest:99999999")


def test_older_api_version_pinned(slurm: dict[str, str], tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMEDGE_HPC_REGISTRY", str(tmp_path / "registry.json"))
    c = open_client("slurmrest", api_version="v0.0.36", staging_dir=str(tmp_path / "st"))
    job = c.submit(JobSpec(script="exit 5\n"))
    done = c.wait(job.id, timeout=60)
    assert c.backend.dialect.version == "v0.0.36" and done.state == JobState.FAILED and done.exit_code == 5


def test_retrain_job_kind_on_slurm(client: Client, tmp_path: typing.Any) -> None:
    from emedge_core import emd

    path = tmp_path / "experiment.h5"
    rng = np.random.default_rng(0)
    survey = rng.normal(size=(24, 24)).astype(np.float32)
    positions = rng.integers(4, 20, size=(12, 2))
    with h5py.File(path, "w") as f:
        g = f.create_group("experiment")
        g["survey"], g["positions"] = survey, positions
        g["values"] = survey[positions[:, 0], positions[:, 1]].astype(np.float64)
        g.attrs["config"] = json.dumps({"window": 8, "seed": 1, "model": {"iters": 20}})
    job = client.submit(retrain_job(str(path)))
    done = client.wait(job.id, timeout=120)
    assert done.state == JobState.COMPLETED, done.stderr_tail
    (maps,) = client.fetch(job.id, str(tmp_path / "back"))
    arrays = emd.read(maps)
    assert arrays["prediction"].shape == (24, 24) and np.isfinite(arrays["uncertainty"][4:20, 4:20]).all()


def test_reduce_emd_job_kind_on_slurm(client: Client, tmp_path: typing.Any) -> None:
    from emedge_core import emd

    frames = np.random.default_rng(1).poisson(5, size=(4, 6, 16, 16)).astype(np.float32)
    emd.write(str(tmp_path / "scan.emd"), {"data": frames}, codec="raw")
    done = client.wait(client.submit(reduce_emd_job(str(tmp_path / "scan.emd"), "virtual_bf")).id, timeout=120)
    assert done.state == JobState.COMPLETED, done.stderr_tail
    reduced = np.load(sorted(client.fetch(done.id, str(tmp_path / "back")))[0])
    assert reduced.shape == (4, 6) and np.isfinite(reduced).all()
