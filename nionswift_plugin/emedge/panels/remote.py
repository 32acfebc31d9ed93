"""The *Remote Control* panel: start and stop the remote-control server inside Swift.

*Start* serves the experiment operations (:mod:`emedge_core.remote.server`) on the chosen
instrument - the microscope Swift is connected to, or the digital twin for rehearsal - and shows
the address and the token file to copy into the notebook on the other computer::

    from emedge_core import remote
    mic = remote.connect("<address>", token_file="<token file>")

The server listens on 127.0.0.1 unless *Host* says otherwise; runs write under
``<staging dir>/remote``. *Stop* ends the runs after their current step (their files are written).
"""
from __future__ import annotations

import typing

from emedge_core import EmedgeError
from emedge_core.remote.auth import DEFAULT_TOKEN_FILE, ensure_token
from nionswift_plugin.emedge.panels.form import Form, PanelDelegate

SOURCES = ("microscope", "twin")


class RemoteView:
    """The panel's widgets in one window and the server started from them."""

    def __init__(self, ui: typing.Any, document_window: typing.Any) -> None:
        f = self.form = Form(ui)
        self.source = f.combo("Instrument", list(SOURCES))
        self.host = f.line("Host", "127.0.0.1")
        self.port = f.line("Port", "8765")
        self.token_file = f.line("Token file", str(DEFAULT_TOKEN_FILE))
        (self.button,) = f.buttons(("Start", self.toggle))
        self.address = f.line("Address", "")        # a line edit: select and copy
        self.status = f.status("Stopped.")
        self.server: typing.Any = None

    @property
    def widget(self) -> typing.Any:
        return self.form.column

    def toggle(self) -> None:
        """Start the server, or stop the one running (UI thread; both take well under a second)."""
        if self.server is not None:
            self.stop()
            return
        try:
            self.server = self._start()
        except (EmedgeError, ValueError) as e:
            self.status.text = f"error: {e}"
            return
        self.address.text = self.server.url
        self.button.text = "Stop"
        self.status.text = (f"Serving {self.server.instruments.name} on {self.server.url}; "
                            f"token in {self.token_file.text}")

    def _start(self) -> typing.Any:
        from emedge_core.remote.server import Instruments, RemoteServer
        from nionswift_plugin.emedge.console import make_instrument

        source = typing.cast(str, self.source.current_item)
        try:
            port = int(self.port.text or "")
        except ValueError:
            raise EmedgeError(f"Port must be a number, not {self.port.text!r}") from None
        token, path = ensure_token((self.token_file.text or "").strip() or None)
        self.token_file.text = str(path)
        instruments = Instruments(source, lambda signal, seed: make_instrument(source, signal, seed=seed),
                                  fresh_per_run=source == "twin")
        server = RemoteServer(instruments, token, host=(self.host.text or "127.0.0.1").strip(), port=port)
        server.start()
        return server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.button.text = "Start"
        self.address.text = ""
        self.status.text = "Stopped."

    def close(self) -> None:
        self.stop()


class RemotePanel(PanelDelegate):
    """The Remote Control panel (one view per window)."""

    panel_id = "emedge-remote-panel"
    panel_name = "Remote Control"
    view_class = RemoteView
