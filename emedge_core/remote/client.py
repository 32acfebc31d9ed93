"""The Python client of the remote-control server; it mirrors Swift's console API.

From a notebook on another computer::

    from emedge_core import remote
    mic = remote.connect("https://swift-pc:8765", token_file="~/emedge-token", verify="swift-pc.pem")
    run = mic.start("eels_band_integral", budget=40, seeds=5)
    run.status                 # 'step 12: 16/40 measured (0.21 s)'
    m = run.maps               # {'measured', 'prediction', 'uncertainty', 'lower', ...}: (H, W) arrays
    summary = run.wait()       # the `emedge run --json` object
    run.download("results/")   # experiment.h5, summary.json, maps.png

``mic.survey()``, ``mic.measure(positions)``, ``mic.state()`` and ``mic.steer(...)`` (suggest/observe)
drive the instrument step by step. Every failure is a :class:`RemoteError` with the server's one line.
"""
from __future__ import annotations

import os
import pathlib
import socket
import time
import typing

import httpx
import numpy as np

from emedge_core import EmedgeError
from emedge_core.instrument import Frames, Survey
from emedge_core.remote.auth import read_token
from emedge_core.remote.schemas import read_npz

ENDED = ("finished", "stopped", "failed")


class RemoteError(EmedgeError):
    """The server refused or failed a request (``status``: the HTTP status, 0 when unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """A connection to one server. ``http``: an ``httpx.Client`` to use instead of a new one
    (e.g. Starlette's in-process ``TestClient``)."""

    def __init__(self, url: str, token: str, *, verify: typing.Union[bool, str] = True, timeout: float = 60.0,
                 http: typing.Optional[httpx.Client] = None) -> None:
        self.url = url.rstrip("/")
        if http is None:     # TCP_NODELAY: headers and body go as two writes; Nagle would hold the body ~40 ms
            transport = httpx.HTTPTransport(verify=verify, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
            http = httpx.Client(transport=transport, timeout=timeout)
        self._http = http
        self._auth = {"Authorization": f"Bearer {token}"}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: typing.Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport -------------------------------------------------------------------------
    def request(self, method: str, path: str, body: typing.Optional[dict[str, typing.Any]] = None,
                params: typing.Optional[dict[str, str]] = None) -> httpx.Response:
        """One request; raises :class:`RemoteError` unless the answer is 2xx."""
        try:
            r = self._http.request(method, self.url + path, json=body, params=params, headers=self._auth)
        except httpx.HTTPError as e:
            raise RemoteError(f"cannot reach {self.url}: {e}") from None
        if r.status_code >= 400:
            try:
                message = r.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:200]
            raise RemoteError(f"{self.url} answered {r.status_code}: {message}", r.status_code)
        return r

    def _json(self, method: str, path: str, body: typing.Optional[dict[str, typing.Any]] = None) -> typing.Any:
        return self.request(method, path, body).json()

    # -- the instrument -----------------------------------------------------------------------
    def status(self) -> dict[str, typing.Any]:
        """Server version, instrument, limits, runs."""
        return typing.cast(dict[str, typing.Any], self._json("GET", "/v1/status"))

    def state(self, signal: str = "spectrum") -> dict[str, typing.Any]:
        """The instrument's state (what ``Instrument.state()`` gives in the server)."""
        return typing.cast(dict[str, typing.Any],
                           self.request("GET", "/v1/instrument/state", params={"signal": signal}).json())

    def survey(self, signal: str = "spectrum") -> Survey:
        """A survey image taken now on the server's instrument."""
        z = read_npz(self.request("POST", "/v1/survey", {"signal": signal}).content)
        return Survey(z["image"], float(z["pixel_size_nm"]), (float(z["origin_nm"][0]), float(z["origin_nm"][1])),
                      str(z["channel"]))

    def measure(self, positions: typing.Any, signal: str = "spectrum") -> Frames:
        """Frames at ``positions`` (n, 2) survey px (row, col)."""
        pos = np.asarray(positions, np.int64).reshape(-1, 2).tolist()
        z = read_npz(self.request("POST", "/v1/measure", {"positions": pos, "signal": signal}).content)
        return Frames(z["data"], str(z["kind"]), energy_eV=z.get("energy_eV"),
                      mrad_per_px=float(z["mrad_per_px"]) if "mrad_per_px" in z else None)

    # -- runs ------------------------------------------------------------------------------------
    def start(self, scalarizer: typing.Any = "eels_peak_energy", *, budget: int = 40, seeds: int = 5,
              **options: typing.Any) -> RemoteRun:
        """Start a closed-loop run on the server; ``options``: batch, acquisition, beta, window, seed,
        travel, stop_uncertainty, drift_every (as in ``emedge run``)."""
        body = {"scalarizer": scalarizer, "budget": budget, "seeds": seeds} | options
        return RemoteRun(self, self._json("POST", "/v1/runs", body)["id"])

    def runs(self) -> list[dict[str, typing.Any]]:
        return typing.cast(list[dict[str, typing.Any]], self._json("GET", "/v1/runs"))

    def run(self, run_id: str) -> RemoteRun:
        """A handle on a run started earlier (by this or another client)."""
        self._json("GET", f"/v1/runs/{run_id}")
        return RemoteRun(self, run_id)

    def steer(self, signal: str = "spectrum", **options: typing.Any) -> SteerSession:
        """A suggest/observe session: the server steers, you measure. ``options``: seeds, batch,
        acquisition, beta, window, seed."""
        return SteerSession(self, self._json("POST", "/v1/steer", {"signal": signal} | options))


class RemoteRun:
    """A run on the server, with the console's verbs (``status``, ``maps``, ``wait``, ``pause``, ...)."""

    def __init__(self, client: Client, run_id: str) -> None:
        self.client, self.id = client, run_id

    def info(self) -> dict[str, typing.Any]:
        """The server's status object: state, message, n_measured, budget, error, summary, files."""
        return typing.cast(dict[str, typing.Any], self.client._json("GET", f"/v1/runs/{self.id}"))

    @property
    def status(self) -> str:
        """One line: the newest step, or how the run ended."""
        return typing.cast(str, self.info()["message"])

    @property
    def maps(self) -> dict[str, np.ndarray]:
        """The newest maps: measured, prediction, uncertainty and, with a model, the 95 % intervals lower,
        upper (the scalar) and predictive_lower, predictive_upper (a new measurement) (H, W; NaN off the
        candidates), positions (n, 2)."""
        return read_npz(self.client.request("GET", f"/v1/runs/{self.id}/maps").content)

    def pause(self) -> None:
        self.client._json("POST", f"/v1/runs/{self.id}/pause")

    def resume(self) -> None:
        self.client._json("POST", f"/v1/runs/{self.id}/resume")

    def stop(self) -> None:
        """Stop after the step in progress; the server still writes the result."""
        self.client._json("POST", f"/v1/runs/{self.id}/stop")

    def wait(self, timeout: typing.Optional[float] = None, poll_s: float = 0.25) -> dict[str, typing.Any]:
        """Block until the run has ended; its summary (the ``emedge run --json`` object).
        Raises :class:`RemoteError` if it failed, TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(poll_s, 0.05)
        while True:
            info = self.info()
            if info["state"] == "failed":
                raise RemoteError(f"run {self.id} failed: {info['error']}")
            if info["state"] in ENDED and info["summary"] is not None:
                return typing.cast(dict[str, typing.Any], info["summary"])
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} still {info['state']} after {timeout} s")
            time.sleep(delay)
            delay = min(poll_s, delay * 2)

    def download(self, out_dir: str) -> dict[str, str]:
        """Fetch experiment.h5, summary.json and maps.png into ``out_dir``; the ``emedge run`` ``files``
        mapping (h5, summary, maps -> local path)."""
        os.makedirs(out_dir, exist_ok=True)
        out = {}
        for key, name in (("h5", "experiment.h5"), ("summary", "summary.json"), ("maps", "maps.png")):
            path = pathlib.Path(out_dir) / name
            path.write_bytes(self.client.request("GET", f"/v1/runs/{self.id}/files/{name}").content)
            out[key] = str(path)
        return out


class SteerSession:
    """Suggest/observe against the server's model; you measure and scalarize."""

    def __init__(self, client: Client, info: dict[str, typing.Any]) -> None:
        self.client, self.id = client, typing.cast(str, info["id"])
        self.n_candidates = int(info["n_candidates"])
        self.survey_shape = tuple(info["survey_shape"])

    def suggest(self, n: typing.Optional[int] = None) -> np.ndarray:
        """(q, 2) survey px to measure next."""
        pos = self.client._json("POST", f"/v1/steer/{self.id}/suggest", {"n": n})["positions"]
        return np.asarray(pos, np.int64).reshape(-1, 2)

    def observe(self, positions: typing.Any, values: typing.Any) -> int:
        """Tell the values (n,) measured at positions (n, 2) (NaN = failed); the number observed so far."""
        vals = [None if not np.isfinite(v) else float(v) for v in np.asarray(values, np.float64).reshape(-1)]
        pos = np.asarray(positions, np.int64).reshape(-1, 2).tolist()
        return int(self.client._json("POST", f"/v1/steer/{self.id}/observe",
                                     {"positions": pos, "values": vals})["n_observed"])

    def close(self) -> None:
        self.client._json("DELETE", f"/v1/steer/{self.id}")


def connect(url: str, token: typing.Optional[str] = None, *, token_file: typing.Optional[str] = None,
            verify: typing.Union[bool, str] = True, timeout: float = 60.0,
            http: typing.Optional[httpx.Client] = None) -> Client:
    """A :class:`Client` for the server at ``url`` with ``token`` (or the one in ``token_file``).
    ``verify``: True (system CAs), False, or the server's certificate / CA file for TLS."""
    if token is None:
        if token_file is None:
            raise EmedgeError("connect needs a token or a token_file")
        token = read_token(os.path.expanduser(token_file))
    return Client(url, token, verify=verify, timeout=timeout, http=http)
