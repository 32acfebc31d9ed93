"""Headless NION Swift with the emedge plug-in loaded and nionswift-usim connected (TestUI), for the
panel tests. Import it after ``pytest.importorskip("nionswift_plugin.usim")``."""
from __future__ import annotations

import contextlib
import time
import typing

import pytest
from nion.swift.model import PlugInManager
from nion.swift.test import TestContext

from nionswift_plugin.emedge.swift_instrument import UsimSession


@contextlib.contextmanager
def swift_with_usim(tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch,
                    before_close: typing.Callable[[typing.Any], None]) -> typing.Iterator[typing.Any]:
    """Yield a document controller; ``before_close(dc)`` stops what the test's panel started."""
    monkeypatch.setenv("EMEDGE_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("EMEDGE_SYSTEM_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("EMEDGE_CONFIG", str(tmp_path / "none-user.toml"))
    usim = UsimSession()        # first: every Application() becomes Swift's global app, usim's included
    setup = TestContext.TestSetup(set_global=True)
    PlugInManager.load_plug_in("pip", "nionswift_plugin.emedge")
    profile = TestContext.MemoryProfileContext()
    dc = setup.app.create_document_controller(profile.create_document_model(auto_close=False), "library")
    setup.app._set_document_model(dc.document_model)    # what opening a project does in the GUI
    try:
        yield dc
    finally:
        before_close(dc)
        dc.close()
        profile.close()
        usim.close()
        PlugInManager.unload_plug_ins()


def pump(dc: typing.Any, until: typing.Callable[[], bool], timeout: float = 60.0) -> None:
    """Run Swift's queued UI tasks until ``until()`` holds."""
    t_end = time.monotonic() + timeout
    while not until():
        if time.monotonic() > t_end:
            raise AssertionError("timed out")
        dc.periodic()
        time.sleep(0.01)
    dc.periodic()
