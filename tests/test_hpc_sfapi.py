"""The sfapi backend against tests/sfapi_standin.py, a local stand-in server built from the
Superfacility API's published OpenAPI schema (NERSC itself cannot be reached from here).
The faults (a lost submit answer, a job missing from the listing right after submit,
expired and wrong credentials) are caused for real over HTTP on 127.0.0.1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import typing

import pytest

from hpc_client import AuthError, ConfigError, JobSpec, JobState, open_client
from hpc_client.client import Client
from sfapi_standin import SfapiStandin


@pytest.fixture
def standin() -> typing.Iterator[SfapiStandin]:
    s = SfapiStandin(client_id="emedge-ci", client_secret="not-a-real-secret").start()
    yield s
    s.stop()


@pytest.fixture
def env(standin: SfapiStandin, tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"SFAPI_URL": standin.url, "SFAPI_TOKEN_URL": standin.token_url, "SFAPI_CLIENT_ID": "emedge-ci",
              "SFAPI_CLIENT_SECRET": "not-a-real-secret", "SFAPI_REMOTE_DIR": str(tmp_path / "pscratch"),
              "EMEDGE_HPC_REGISTRY": str(tmp_path / "registry.json"), "EMEDGE_HPC_CONFIG": str(tmp_path / "none.toml")}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@pytest.fixture
def client(env: dict[str, str]) -> Client:
    c = open_client("sfapi")
    c.poll, c.max_poll = 0.1, 0.5
    return c


def test_round_trip_with_upload_and_download(client: Client, tmp_path: typing.Any) -> None:
    src = tmp_path / "frames.bin"
    src.write_bytes(bytes(range(256)) * 10)
    job = client.submit(JobSpec(script="wc -c < frames.bin > size.txt\n", stage_in=[str(src)], stage_out=["size.txt"]))
    assert job.id.startswith("sfapi:")
    done = client.wait(job.id, timeout=30)
    assert (done.state, done.exit_code, done.outputs) == (JobState.COMPLETED, 0, ["size.txt"])
    assert open(client.fetch(job.id, str(tmp_path / "back"))[0]).read().strip() == "2560"


def test_failed_job(client: Client) -> None:
    done = client.wait(client.submit(JobSpec(script="echo bad input >&2; exit 6\n")).id, timeout=30)
    assert (done.state, done.exit_code) == (JobState.FAILED, 6) and "bad input" in done.stderr_tail


def test_lost_submit_answer_makes_no_duplicate(client: Client, standin: SfapiStandin) -> None:
    standin.drop_next_submit = True
    spec = JobSpec(script="echo once\n")
    job = client.submit(spec)
    assert standin.submits == 1
    assert client.submit(spec).id == job.id and standin.submits == 1
    assert client.wait(job.id, timeout=30).state == JobState.COMPLETED


def test_job_missing_right_after_submit_is_followed(client: Client, standin: SfapiStandin) -> None:
    standin.hide_jobs_for = 3.0             # as in sfapi_client issue #93
    job = client.submit(JobSpec(script="true\n"))
    assert (job.state, job.reason) == (JobState.PENDING, "not yet listed")
    assert client.wait(job.id, timeout=30).state == JobState.COMPLETED


def test_cancel_pending_running_finished(client: Client, standin: SfapiStandin) -> None:
    standin.start_delay = 2.0
    pending = client.submit(JobSpec(script="sleep 30\n"))
    assert client.cancel(pending.id).state == JobState.CANCELLED
    standin.start_delay = 0.0
    running = client.submit(JobSpec(script="sleep 30\n"))
    while client.status(running.id).state != JobState.RUNNING:
        time.sleep(0.05)
    client.cancel(running.id)
    assert client.wait(running.id, timeout=30).state == JobState.CANCELLED
    finished = client.submit(JobSpec(script="true\n"))
    client.wait(finished.id, timeout=30)
    assert client.cancel(finished.id).state == JobState.COMPLETED


def test_expired_token_is_renewed(env: dict[str, str], standin: SfapiStandin) -> None:
    c = open_client("sfapi")
    standin.token_lifetime = 0.5
    c.backend.auth.renew()
    standin.tokens.clear()                  # the server forgets it: the next call gets 401 and renews once
    job = c.submit(JobSpec(script="true\n"))
    assert c.wait(job.id, timeout=30).state == JobState.COMPLETED


def test_wrong_secret_and_wrong_token(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFAPI_CLIENT_SECRET", "wrong-secret-value")
    with pytest.raises(AuthError, match="refused client 'emedge-ci'") as err:
        open_client("sfapi").submit(JobSpec(script="true\n"))
    assert "wrong-secret-value" not in str(err.value)
    monkeypatch.delenv("SFAPI_CLIENT_SECRET")
    monkeypatch.setenv("SFAPI_ACCESS_TOKEN", "made-up-token")
    with pytest.raises(AuthError, match="rejected the access token") as err:
        open_client("sfapi").submit(JobSpec(script="true\n"))
    assert "made-up-token" not in str(err.value)
    monkeypatch.delenv("SFAPI_ACCESS_TOKEN")
    with pytest.raises(ConfigError, match="SFAPI_ACCESS_TOKEN"):
        open_client("sfapi")


def test_cli_sfapi(env: dict[str, str], tmp_path: typing.Any) -> None:
    script = tmp_path / "job.sh"
    script.write_text("echo from-perlmutter > r.txt\n")
    run = lambda *a: subprocess.run([sys.executable, "-m", "emedge_core", "jobs", *a],  # noqa: E731
                                    capture_output=True, text=True, env=dict(os.environ))
    r = run("submit", "--backend", "sfapi", "--script", str(script), "--stage-out", "r.txt", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["state"] == "COMPLETED" and out["outputs"] == ["r.txt"]
    assert "not-a-real-secret" not in r.stdout + r.stderr
    fetched = json.loads(run("fetch", out["id"], str(tmp_path / "got"), "--json").stdout.splitlines()[-1])
    assert open(fetched["files"][0]).read() == "from-perlmutter\n"
