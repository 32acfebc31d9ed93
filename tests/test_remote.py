"""The remote-control server on loopback with the real client: runs, refusals, limits, TLS, killed clients.

Every test talks to a real :class:`RemoteServer` (uvicorn on 127.0.0.1, an ephemeral port) or, for
what only an in-process transport can fake (another caller address), to the same Starlette app
through Starlette's TestClient. The fuzzing lives in tests/test_remote_fuzz.py.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import typing

import numpy as np
import pytest
from starlette.testclient import TestClient

from emedge_core import EmedgeError, emd
from emedge_core.commands.serve import make_instruments
from emedge_core.experiment import Experiment, ExperimentConfig
from emedge_core.remote import RemoteError, connect
from emedge_core.remote.auth import ensure_token, read_token
from emedge_core.remote.server import Limits, RemoteServer
from emedge_core.twin import DigitalTwin

SIZE = 48          # twin survey edge: 33 x 33 = 1089 candidates with 16 px patches
SCAL = "eels_peak_energy"


def _instruments() -> typing.Any:
    return make_instruments(argparse.Namespace(instrument="twin", size=SIZE, dose=2e4, drift=None, data=None))


@pytest.fixture
def token() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def server(tmp_path: pathlib.Path, token: str) -> typing.Iterator[RemoteServer]:
    s = RemoteServer(_instruments(), token, out_root=str(tmp_path / "srv"), limits=Limits(rate=1000, burst=1000))
    s.start()
    yield s
    s.stop()


def _runs_on_disk(server: RemoteServer) -> list[str]:
    return sorted(p for p in os.listdir(server.out_root) if p.startswith("run-"))


# -- a run -----------------------------------------------------------------------------------
def test_ten_step_run_on_the_twin_matches_a_local_run(server: RemoteServer, token: str) -> None:
    with connect(server.url, token) as mic:
        run = mic.start(SCAL, budget=10, seeds=4, seed=3)
        summary = run.wait(timeout=300)
        maps = run.maps
        files = run.download(os.path.join(server.out_root, "..", "fetched"))
    local = Experiment(DigitalTwin(size=SIZE, seed=3), SCAL, ExperimentConfig(budget=10, seeds=4, seed=3,
                                                                              acquisition_params={"beta": 2.0})).run()
    assert summary["positions"] == local.positions.tolist()
    assert summary["scalars"] == pytest.approx(local.values.tolist())
    assert summary["stopped_by"] == "budget" and summary["n_measured"] == 10
    assert summary["n_candidates"] == local.n_candidates and summary["seconds_per_step_median"] > 0
    assert maps["measured"].shape == (SIZE, SIZE) and np.isfinite(maps["measured"]).sum() == 10
    assert maps["prediction"].shape == (SIZE, SIZE)
    np.testing.assert_allclose(maps["predictive_upper"], local.intervals["predictive_upper"], equal_nan=True)
    ok = np.isfinite(maps["prediction"])
    assert (maps["predictive_lower"][ok] <= maps["lower"][ok]).all()
    assert (maps["upper"][ok] >= maps["prediction"][ok]).all()
    prov = emd.info(files["h5"])["provenance"]   # the remote caller and every request about the run
    remote = prov["parameters"]["remote"]
    assert remote["caller"].startswith("127.0.0.1:") and remote["request"]["budget"] == 10
    assert remote["actions"][0]["action"] == "POST /v1/runs" and remote["actions"][0]["status"] == 201
    polls = [a for a in remote["actions"] if a["action"] == f"GET /v1/runs/{run.id}"]
    assert polls and sum(a.get("count", 1) for a in polls) >= 2 and len(polls) < len(remote["actions"])
    log = pathlib.Path(server.log_path).read_text()
    assert token not in log and token not in pathlib.Path(files["h5"]).read_bytes().decode("latin-1")
    assert f"GET /v1/runs/{run.id}/files/experiment.h5" in log


def test_pause_resume_stop_and_limits_on_runs(server: RemoteServer, token: str) -> None:
    with connect(server.url, token) as mic:
        run = mic.start(SCAL, budget=200, seeds=4)
        run.pause()
        with pytest.raises(RemoteError, match="already in progress") as e:     # max_runs = 1
            mic.start(SCAL, budget=10, seeds=4)
        assert e.value.status == 409
    with connect(server.url, token) as mic:
        run = mic.run(run.id)
        deadline = time.monotonic() + 60
        while run.info()["state"] != "paused" and time.monotonic() < deadline:
            time.sleep(0.05)
        n = run.info()["n_measured"]
        time.sleep(0.5)
        assert run.info()["n_measured"] == n          # paused: nothing measured
        run.resume()
        run.stop()
        summary = run.wait(timeout=120)
        assert summary["stopped_by"] == "stopped" and summary["n_measured"] < 200
        assert run.info()["state"] == "stopped"


def test_suggest_observe_session_and_direct_measurements(server: RemoteServer, token: str) -> None:
    with connect(server.url, token) as mic:
        survey = mic.survey()
        assert survey.image.shape == (SIZE, SIZE) and survey.image.dtype == np.float32
        assert mic.state()["instrument"] == "digital twin"
        s = mic.steer(seeds=3, window=16)
        assert s.n_candidates == (SIZE - 15) ** 2
        seen = []
        for _ in range(6):
            pos = s.suggest()
            frames = mic.measure(pos)
            assert frames.data.shape == (len(pos), 512) and frames.energy_eV is not None
            s.observe(pos, frames.data[:, 100:200].sum(axis=1))   # the client's own scalar
            seen += [tuple(p) for p in pos.tolist()]
        assert len(seen) == len(set(seen)) >= 6                     # never the same position twice
        with pytest.raises(RemoteError, match="not candidates"):
            s.observe([[0, 0]], [1.0])                              # a corner is not a patch centre
        with pytest.raises(RemoteError, match="outside"):
            mic.measure([[SIZE, 0]])
        s.close()
        assert mic.status()["sessions"] == []


# -- refusals: nothing runs -----------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789abcdef"},
                                     {"Authorization": "Basic Zm9vOmJhcg=="}, {"Authorization": "Bearer x"}])
def test_refused_without_the_right_token(server: RemoteServer, headers: dict[str, str]) -> None:
    import httpx

    body = {"scalarizer": SCAL, "budget": 10, "seeds": 4}
    for method, path, b in (("POST", "/v1/runs", body), ("POST", "/v1/measure", {"positions": [[20, 20]]}),
                            ("GET", "/v1/status", None), ("POST", "/v1/steer", {})):
        r = httpx.request(method, server.url + path, json=b, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "token" in r.json()["error"]
    assert server.runs == {} and server.sessions == {} and _runs_on_disk(server) == []
    assert server.instruments._made == {}            # no instrument was even opened
    log = [json.loads(line) for line in pathlib.Path(server.log_path).read_text().splitlines()]
    assert sum("refused" in e for e in log) == 4 and all("wrong-token" not in json.dumps(e) for e in log)


def test_refused_from_another_machine_when_bound_to_loopback(tmp_path: pathlib.Path, token: str) -> None:
    server = RemoteServer(_instruments(), token, out_root=str(tmp_path))
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(server.app, client=("192.0.2.7", 40000)) as far:
        r = far.post("/v1/runs", json={"scalarizer": SCAL, "budget": 10, "seeds": 4}, headers=auth)
        assert r.status_code == 403 and "loopback" in r.json()["error"]
    with TestClient(server.app, client=("127.0.0.1", 40000)) as near:
        assert near.get("/v1/status", headers=auth).status_code == 200
    assert server.runs == {} and _runs_on_disk(server) == []
    # bound to every interface, the same far caller with the token is served
    open_server = RemoteServer(_instruments(), token, host="0.0.0.0", out_root=str(tmp_path / "open"))
    with TestClient(open_server.app, client=("192.0.2.7", 40000)) as far:
        assert far.get("/v1/status", headers=auth).status_code == 200
        assert far.get("/v1/status").status_code == 401


def test_oversized_and_rate_limited_requests(tmp_path: pathlib.Path, token: str) -> None:
    server = RemoteServer(_instruments(), token, out_root=str(tmp_path), limits=Limits(max_body=4096, rate=5, burst=5))
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(server.app, client=("127.0.0.1", 1)) as c:
        big = json.dumps({"positions": [[1, 1]] * 2000}).encode()
        r = c.post("/v1/measure", content=big, headers=auth)
        assert r.status_code == 413 and "4096 bytes" in r.json()["error"]
        chunks = (big[i:i + 1000] for i in range(0, len(big), 1000))     # streamed: no Content-Length
        r = c.post("/v1/measure", content=chunks, headers=auth)
        assert r.status_code == 413
        codes = [c.get("/v1/status", headers=auth).status_code for _ in range(20)]
        assert 429 in codes and codes[0] == 200
    assert server.instruments._made == {}


def test_bad_requests_get_one_clear_line(server: RemoteServer, token: str) -> None:
    with connect(server.url, token) as mic:
        cases: list[tuple[dict[str, typing.Any], str]] = [
                 ({"scalarizer": "no_such"}, "unknown scalarizer"), ({"budget": 0}, "budget must be"),
                 ({"budget": True}, "budget must be"), ({"acquisition": "greedy"}, "acquisition must be one of"),
                 ({"seeds": 20, "budget": 10}, "seeds \\(20\\) exceed"), ({"colour": 1}, "unknown field 'colour'"),
                 ({"scalarizer": {"name": "eels_band_integral", "bogus": 1}}, "bad parameters"),
                 ({"model": "svm"}, "model must be one of gp, dkl")]
        for body, message in cases:
            with pytest.raises(RemoteError, match=message) as e:
                mic.request("POST", "/v1/runs", body)
            assert e.value.status == 400 and "\n" not in str(e.value)
        for raw in (b'{"beta": Infinity}', b'{"budget": 1', b"\xff\xfe", b"[1, 2]", b'"x"', b"{}" * 3):
            r = mic._http.post(server.url + "/v1/runs", content=raw, headers=mic._auth)
            assert r.status_code == 400 and "\n" not in r.json()["error"]
        with pytest.raises(RemoteError, match="no run"):
            mic.run("0123456789ab")
        with pytest.raises(RemoteError, match="no such route"):
            mic.request("GET", "/v2/anything")
    assert server.runs == {} and _runs_on_disk(server) == []


# -- a killed client ------------------------------------------------------------------------------
def test_a_killed_client_neither_stops_nor_leaks_the_run(server: RemoteServer, token: str,
                                                         tmp_path: pathlib.Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    proc = subprocess.Popen([sys.executable, "-m", "emedge_core", "remote", "run", "--url", server.url,
                             "--token-file", str(token_file), "--scalarizer", SCAL, "--budget", "14", "--seeds",
                             "4", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with connect(server.url, token) as mic:
        deadline = time.monotonic() + 120
        while not (mic.runs() and mic.runs()[0]["n_measured"] >= 4):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.kill()
        proc.wait(30)
        run = mic.run(mic.runs()[0]["id"])
        summary = run.wait(timeout=300)
        assert summary["n_measured"] == 14 and summary["stopped_by"] == "budget"     # it went on to its end
        assert not any(t.name == f"emedge-remote-{run.id}" for t in threading.enumerate())
        second = mic.start(SCAL, budget=5, seeds=4)                            # its slot and instrument are free
        assert second.wait(timeout=300)["n_measured"] == 5


# -- the command line ---------------------------------------------------------------------------------
def test_serve_and_remote_run_command_line(tmp_path: pathlib.Path) -> None:
    token_file = tmp_path / "tok"
    env = os.environ | {"EMEDGE_STAGING_DIR": str(tmp_path / "staging")}
    serve = subprocess.Popen([sys.executable, "-m", "emedge_core", "serve", "--instrument", "twin", "--port", "0",
                              "--size", str(SIZE), "--token-file", str(token_file), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = json.loads(typing.cast(typing.IO[str], serve.stdout).readline())
        assert set(first) == {"url", "token_file"} and first["url"].startswith("http://127.0.0.1:")
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and first["token_file"] == str(token_file)
        out = subprocess.run([sys.executable, "-m", "emedge_core", "remote", "run", "--url", first["url"],
                              "--token-file", str(token_file), "--scalarizer", SCAL, "--budget", "6", "--seeds", "3",
                              "--out", str(tmp_path / "res"), "--json"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        for key in ("positions", "scalars", "stopped_by", "seconds_per_step_median", "n_candidates", "files"):
            assert key in summary
        assert len(summary["positions"]) == 6 and pathlib.Path(summary["files"]["h5"]).is_file()
        bad = subprocess.run([sys.executable, "-m", "emedge_core", "remote", "run", "--url", first["url"],
                              "--token-file", str(tmp_path / "missing"), "--budget", "6", "--json"],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--token-file" in bad.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        rc = serve.wait(60)
    assert rc == 0, serve.stderr.read() if serve.stderr else ""
    with socket.socket() as s:      # the port is closed
        assert s.connect_ex(("127.0.0.1", int(first["url"].rsplit(":", 1)[1]))) != 0


def test_serve_refuses_bad_options(tmp_path: pathlib.Path) -> None:
    loose = tmp_path / "loose"
    loose.write_text("x" * 40)
    loose.chmod(0o644)
    for extra, message in ((["--token-file", str(loose)], "chmod 600"),
                           (["--cert", str(tmp_path / "none.pem"), "--key", str(loose)], "--cert"),
                           (["--instrument", "replay"], "--data")):
        r = subprocess.run([sys.executable, "-m", "emedge_core", "serve", "--port", "0", *extra],
                           capture_output=True, text=True, timeout=120,
                           env=os.environ | {"EMEDGE_STAGING_DIR": str(tmp_path)})
        assert r.returncode == 2 and message in r.stderr and r.stderr.startswith("emedge: error:")


def test_token_file_is_made_owner_only(tmp_path: pathlib.Path) -> None:
    token, path = ensure_token(tmp_path / "sub" / "token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 40
    assert ensure_token(path)[0] == token == read_token(path)
    path.chmod(0o640)
    with pytest.raises(EmedgeError, match="chmod 600"):
        read_token(path)


# -- TLS ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_tls(tmp_path: pathlib.Path, token: str) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server = RemoteServer(_instruments(), token, out_root=str(tmp_path / "srv"), certfile=str(cert),
                          keyfile=str(key))
    url = server.start()
    try:
        assert url.startswith("https://127.0.0.1:")
        with connect(url, token, verify=str(cert)) as mic:
            assert mic.status()["instrument"] == "twin"
        with connect(url, token) as untrusting, pytest.raises(RemoteError, match="cannot reach"):
            untrusting.status()          # the self-signed certificate is not trusted by default
        with connect(url.replace("https", "http"), token) as plain, pytest.raises(RemoteError):
            plain.status()
    finally:
        server.stop()
