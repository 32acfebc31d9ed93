"""The Remote Control panel inside a real headless Swift with nionswift-usim, driven by the real client.

Start in the panel, copy the address, connect with the token file, run a 10-step experiment on
the usim microscope through Swift's instrumentation, Stop: the port closes.
"""
from __future__ import annotations

import os
import pathlib
import socket
import stat
import time
import typing

import numpy as np
import pytest

pytest.importorskip("nionswift_plugin.usim")

from nion.swift import Facade  # noqa: E402

from emedge_core import emd  # noqa: E402
from emedge_core.remote import RemoteError, connect  # noqa: E402
from swift_harness import swift_with_usim  # noqa: E402

Facade.initialize()
PANEL = "emedge-remote-panel"


@pytest.fixture
def swift(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> typing.Iterator[typing.Any]:
    """Swift with the plug-in loaded and usim connected; yields a document controller."""
    def stop_servers(dc: typing.Any) -> None:
        for view in typing.cast(typing.Any, dc.find_dock_panel(PANEL)).panel_delegate.views:
            view.stop()

    with swift_with_usim(tmp_path, monkeypatch, stop_servers) as dc:
        yield dc


def _wait(dc: typing.Any, run: typing.Any, timeout: float = 600) -> dict[str, typing.Any]:
    """Pump Swift's UI tasks while the run goes on; its summary."""
    end = time.monotonic() + timeout
    while True:
        info = run.info()
        assert info["state"] != "failed", info["error"]
        if info["summary"] is not None:
            return typing.cast(dict[str, typing.Any], info["summary"])
        assert time.monotonic() < end, "timed out"
        dc.periodic()
        time.sleep(0.05)


def test_panel_starts_the_server_and_a_notebook_runs_ten_steps_on_usim(swift: typing.Any,
                                                                        tmp_path: pathlib.Path) -> None:
    dc = swift
    view = dc.find_dock_panel(PANEL).panel_delegate.views[-1]
    assert view.status.text == "Stopped." and view.button.text == "Start"
    token_file = tmp_path / "token"
    view.token_file.text, view.port.text = str(token_file), "0"
    view.source.current_item = "microscope"
    view.button.on_clicked()
    assert view.button.text == "Stop", view.status.text
    url = view.address.text
    assert url.startswith("http://127.0.0.1:") and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    with connect(url, token_file=str(token_file)) as mic:
        assert mic.state()["instrument"] == "swift"
        with pytest.raises(RemoteError, match="token"):
            connect(url, "not-the-token-0123456789").status()
        run = mic.start("eels_band_integral", budget=10, seeds=4, window=8)
        summary = _wait(dc, run)
        assert summary["n_measured"] == 10 and summary["stopped_by"] == "budget"
        assert all(np.isfinite(v) for v in summary["scalars"])
        files = run.download(str(tmp_path / "fetched"))
    prov = emd.info(files["h5"])["provenance"]
    assert prov["instrument_state"]["instrument"] == "swift"
    assert prov["parameters"]["remote"]["instrument"] == "microscope"
    assert os.path.isdir(os.path.join(str(tmp_path / "staging"), "remote", f"run-{run.id}"))
    view.button.on_clicked()                     # Stop
    assert view.button.text == "Start" and view.address.text == "" and view.status.text == "Stopped."
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(url.rsplit(":", 1)[1]))) != 0


def test_panel_refuses_a_bad_port(swift: typing.Any) -> None:
    view = swift.find_dock_panel(PANEL).panel_delegate.views[-1]
    view.port.text = "eighty"
    view.button.on_clicked()
    assert view.status.text == "error: Port must be a number, not 'eighty'" and view.server is None


def test_emedge_serve_usim_and_a_ten_step_remote_run(tmp_path: pathlib.Path) -> None:
    """The command-line server on nionswift-usim (its session made on the main thread), SIGTERM ends it."""
    import json
    import signal
    import subprocess
    import sys

    env = os.environ | {"EMEDGE_STAGING_DIR": str(tmp_path / "staging")}
    serve = subprocess.Popen([sys.executable, "-m", "emedge_core", "serve", "--instrument", "usim", "--size", "32",
                              "--port", "0", "--token-file", str(tmp_path / "tok"), "--json"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = json.loads(typing.cast(typing.IO[str], serve.stdout).readline())["url"]
        out = subprocess.run([sys.executable, "-m", "emedge_core", "remote", "run", "--url", url, "--token-file",
                              str(tmp_path / "tok"), "--scalarizer", "eels_band_integral", "--budget", "10",
                              "--seeds", "4", "--window", "8", "--json"], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert len(summary["positions"]) == 10 and summary["stopped_by"] == "budget"
        with connect(url, token_file=str(tmp_path / "tok")) as mic, pytest.raises(RemoteError, match="spectrum frames"):
            mic.survey("diffraction")
    finally:
        serve.send_signal(signal.SIGTERM)
        rc = serve.wait(120)
    assert rc == 0, serve.stderr.read() if serve.stderr else ""
