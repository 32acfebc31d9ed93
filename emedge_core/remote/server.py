"""The remote-control server: the experiment operations over HTTP for a client on another machine.

Starlette routes served by uvicorn (HTTP/1.1, optional TLS). Every request passes :class:`Guard`
first, which refuses, before any route runs:

- a caller that is not on this machine while the server is bound to loopback (403);
- a missing or wrong ``Authorization: Bearer <token>`` (401; constant-time comparison);
- more than ``Limits.rate`` requests per second from one address, beyond a burst (429);
- a body larger than ``Limits.max_body`` bytes (413), whether announced or streamed.

Bodies are JSON objects validated by :mod:`emedge_core.remote.schemas`; arrays go out as ``.npz``
(no pickles). Every answer to a bad request is one JSON object ``{"error": "<one line>"}``.

Routes (all under ``/v1``)::

    GET  status                      server, instrument, limits, runs
    GET  instrument/state?signal=S   the instrument's state (JSON)
    POST survey    {signal}          -> .npz image (H, W), pixel_size_nm, origin_nm
    POST measure   {signal, positions}  -> .npz data (n, ...), energy_eV (E,) or mrad_per_px
    POST runs      RunRequest        start a closed-loop run -> {"id": ...} (201)
    GET  runs | runs/{id}            run status (its summary once it has ended)
    POST runs/{id}/pause|resume|stop
    GET  runs/{id}/maps              -> .npz measured, prediction, uncertainty, 95 % intervals (H, W)
    GET  runs/{id}/files/{name}      experiment.h5, summary.json or maps.png
    POST steer     SteerRequest      a suggest/observe session -> {"id", "n_candidates", ...}
    POST steer/{id}/suggest {n} | steer/{id}/observe {positions, values};  DELETE steer/{id}

Every request (caller address, method, path, answer status; never a header) is appended to the
server's action log (``<out root>/remote-actions.jsonl``); the requests about a run also go into
that run's provenance in its ``experiment.h5``.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
import socket
import threading
import time
import typing
import uuid

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from emedge_core import EmedgeError, __version__
from emedge_core.experiment import INTERVALS, Experiment, ExperimentConfig, Step
from emedge_core.instrument import Instrument
from emedge_core.remote import schemas
from emedge_core.remote.auth import is_loopback, token_matches
from emedge_core.remote.schemas import BadRequest

LOG = logging.getLogger("emedge.remote")
RESULT_FILES = {"experiment.h5": "h5", "summary.json": "summary", "maps.png": "maps"}   # name -> emedge run key
ENDED = ("finished", "stopped", "failed")
NPZ = "application/x-npz"


@dataclasses.dataclass(frozen=True)
class Limits:
    """max_body: bytes per request body; rate: requests per second per caller address, with
    ``burst`` allowed at once; max_runs: runs at the same time; max_sessions: open steering
    sessions; kept_runs: ended runs whose status stays queryable (their files stay on disk)."""

    max_body: int = 1 << 20
    rate: float = 50.0
    burst: int = 100
    max_runs: int = 1
    max_sessions: int = 4
    kept_runs: int = 100


InstrumentMaker = typing.Callable[[str, int], Instrument]


class Instruments:
    """The instruments the server drives, made on first use per signal kind ("spectrum" or
    "diffraction") by ``make(signal, seed)``. One caller at a time uses an instrument (a run holds
    it to its end); with ``fresh_per_run`` (the twin) every run gets a new one built with its seed.
    ``opened``: instruments already made, by signal kind (closed with the others)."""

    def __init__(self, name: str, make: InstrumentMaker, fresh_per_run: bool = False,
                 opened: typing.Optional[dict[str, Instrument]] = None) -> None:
        self.name, self._make, self.fresh_per_run = name, make, fresh_per_run
        self._made: dict[str, Instrument] = dict(opened or {})
        self._locks: dict[str, threading.Lock] = {"spectrum": threading.Lock(), "diffraction": threading.Lock()}
        self._guard = threading.Lock()

    def lease(self, signal: str, seed: int = 0, *, for_run: bool = False,
              wait_s: float = 2.0) -> tuple[Instrument, typing.Callable[[], None]]:
        """(instrument, release): the instrument to use now; 409 when another caller holds it."""
        if for_run and self.fresh_per_run:
            inst = self._make(signal, seed)
            return inst, functools.partial(_close, inst)
        lock = self._locks[signal]
        if not lock.acquire(timeout=wait_s):
            raise BadRequest(f"the {signal} instrument is busy (a run holds it); stop the run or wait", 409)
        try:
            with self._guard:
                if signal not in self._made:
                    self._made[signal] = self._make(signal, seed)
                return self._made[signal], lock.release
        except BaseException:
            lock.release()
            raise

    def close(self) -> None:
        with self._guard:
            for inst in self._made.values():
                _close(inst)
            self._made.clear()


def _close(inst: Instrument) -> None:
    close = getattr(inst, "close", None)
    if close is not None:
        close()


def _utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class RemoteRun:
    """A closed-loop experiment the server runs on a worker thread, whoever asked for it."""

    def __init__(self, server: RemoteServer, request: schemas.RunRequest, caller: str) -> None:
        from emedge_core.scalarize import from_spec

        self.id = uuid.uuid4().hex[:12]
        self.request, self.caller, self.server = request, caller, server
        self.started_utc = _utc()
        self.out_dir = os.path.join(server.out_root, f"run-{self.id}")
        try:
            scalarizer = from_spec(request.scalarizer)
        except (TypeError, AttributeError):
            raise BadRequest("scalarizer is not a known name or object") from None
        config = ExperimentConfig(
            budget=request.budget, seeds=request.seeds, batch=request.batch, acquisition=request.acquisition,
            acquisition_params={"beta": request.beta} if request.acquisition == "ucb" else {},
            window=request.window, seed=request.seed, travel=request.travel,
            stop_uncertainty=request.stop_uncertainty, drift_every=request.drift_every,
            model={"kind": request.model} if request.model else {})
        instrument, self._release = server.instruments.lease(scalarizer.signal_kind, request.seed, for_run=True)
        try:
            self.experiment = Experiment(instrument, scalarizer, config)
        except BaseException:
            self._release()
            raise
        self.state, self.message = "running", "starting: survey ..."
        self.error: typing.Optional[str] = None
        self.summary: typing.Optional[dict[str, typing.Any]] = None
        self.files: dict[str, str] = {}
        self.actions: list[dict[str, typing.Any]] = []
        self._lock = threading.Lock()
        self._maps: dict[str, np.ndarray] = {}
        self._n_measured = 0
        self.thread = threading.Thread(target=self._work, name=f"emedge-remote-{self.id}", daemon=True)

    # -- control ---------------------------------------------------------------------------
    def pause(self) -> None:
        self.experiment.pause()

    def resume(self) -> None:
        self.experiment.resume()

    def stop(self) -> None:
        self.experiment.stop()

    def status(self) -> dict[str, typing.Any]:
        """JSON status: state, one-line message, progress; ``summary`` (the ``emedge run`` JSON) once ended."""
        with self._lock:
            state = "paused" if self.state == "running" and self.experiment.paused else self.state
            return {"id": self.id, "state": state, "message": self.message, "n_measured": self._n_measured,
                    "budget": self.request.budget, "caller": self.caller, "started_utc": self.started_utc,
                    "error": self.error, "summary": self.summary, "files": dict(self.files)}

    def maps(self) -> dict[str, np.ndarray]:
        with self._lock:
            return dict(self._maps)

    def record(self, action: dict[str, typing.Any]) -> None:
        """Keep ``action`` for the run's provenance; a repeat of the previous one (same caller, request
        and answer, e.g. status polls) only counts up and moves ``last_utc``."""
        with self._lock:
            last = self.actions[-1] if self.actions else None
            if last is not None and all(last[k] == action[k] for k in ("caller", "action", "status")):
                last["count"] = last.get("count", 1) + 1
                last["last_utc"] = action["utc"]
            else:
                self.actions.append(dict(action))

    # -- worker thread ------------------------------------------------------------------------
    def _work(self) -> None:
        from emedge_core.experiment_file import write_experiment

        try:
            result = self.experiment.run(callback=self._on_step)
            with self._lock:
                actions = list(self.actions)
            paths = write_experiment(result, self.out_dir, extra_provenance={
                "command": "emedge serve (remote run)",
                "remote": {"run": self.id, "caller": self.caller, "instrument": self.server.instruments.name,
                           "request": dataclasses.asdict(self.request), "actions": actions}})
            state = "stopped" if result.stopped_by == "stopped" else "finished"
            measured = np.full(result.survey.shape, np.nan)
            measured[result.positions[:, 0], result.positions[:, 1]] = result.values
            with self._lock:
                self._maps = {"measured": measured, "positions": result.positions, "values": result.values,
                              "prediction": result.prediction, "uncertainty": result.uncertainty,
                              **result.intervals}   # the final model, its 95 % intervals (lower, ..., predictive_upper)
                self.summary = result.summary()
                self.files = dict(paths)
                self.state = state
                self.message = f"{state}: {len(result.values)} measured, stopped by {result.stopped_by}"
        except Exception as e:   # EmedgeError: one line; anything else also goes to the log with its traceback
            if not isinstance(e, EmedgeError):
                LOG.exception("remote run %s failed", self.id)
            with self._lock:
                self.state, self.error = "failed", str(e) if isinstance(e, EmedgeError) else f"{type(e).__name__}: {e}"
                self.message = f"error: {self.error}"
        finally:
            self._release()

    def _on_step(self, step: Step) -> None:
        steerer = step.steerer
        patches = steerer.patches
        order = np.asarray(steerer.order, np.int64)
        pos = patches.coords[order]
        shape = tuple(int(s) for s in patches.to_map(np.zeros(len(patches))).shape)
        measured = np.full(shape, np.nan)
        measured[pos[:, 0], pos[:, 1]] = steerer.values
        maps = {"measured": measured, "positions": pos, "values": np.asarray(steerer.values, np.float64)}
        if step.posterior is not None:
            post = step.posterior
            maps |= {"prediction": patches.to_map(post.mean), "uncertainty": patches.to_map(post.std),
                     **{k: patches.to_map(getattr(post, k)) for k in INTERVALS}}
        with self._lock:
            self._maps = maps
            self._n_measured = step.n_measured
            self.message = f"step {step.index + 1}: {step.n_measured}/{step.budget} measured ({step.seconds:.2f} s)"


class SteerSession:
    """Suggest/observe on a survey: the server keeps the model, the client measures and scalarizes."""

    def __init__(self, server: RemoteServer, request: schemas.SteerRequest, caller: str) -> None:
        from emedge_core.experiment import make_steerer

        self.id, self.caller, self.request = uuid.uuid4().hex[:12], caller, request
        instrument, release = server.instruments.lease(request.signal)
        try:
            survey, available = instrument.survey(), instrument.available()
        finally:
            release()
        config = ExperimentConfig(seeds=request.seeds, batch=request.batch, acquisition=request.acquisition,
                                  acquisition_params={"beta": request.beta} if request.acquisition == "ucb" else {},
                                  window=request.window, seed=request.seed)
        self.steerer = make_steerer(survey.image, config, available)     # as a run on this survey would steer
        self.survey_shape = survey.shape
        self.lock = threading.Lock()

    def suggest(self, n: typing.Optional[int]) -> list[list[int]]:
        with self.lock:
            return typing.cast(list[list[int]], self.steerer.suggest(n).tolist())

    def observe(self, positions: list[list[int]], values: list[typing.Optional[float]]) -> int:
        vals = np.array([np.nan if v is None else v for v in values], np.float64)
        with self.lock:
            try:
                self.steerer.observe(np.asarray(positions, np.int64).reshape(-1, 2), vals)
            except ValueError as e:
                raise BadRequest(str(e)) from None
            return len(self.steerer.order)


class RemoteServer:
    """The server: ``instruments`` behind ``token`` on ``host:port`` (port 0: any free port).

    :meth:`start` serves on a background thread (the Swift panel, tests), :meth:`stop` ends it;
    ``out_root`` receives one ``run-<id>/`` directory per run and the action log; ``certfile`` and
    ``keyfile`` (PEM) switch on TLS."""

    def __init__(self, instruments: Instruments, token: str, *, host: str = "127.0.0.1", port: int = 0,
                 out_root: typing.Optional[str] = None, certfile: typing.Optional[str] = None,
                 keyfile: typing.Optional[str] = None, limits: Limits = Limits()) -> None:
        if (certfile is None) != (keyfile is None):
            raise EmedgeError("TLS needs both --cert and --key")
        if len(token) < 16:
            raise EmedgeError("the token must be at least 16 characters")
        from emedge_core.settings import load_settings

        self.instruments, self.host, self.port, self.limits = instruments, host, int(port), limits
        self.certfile, self.keyfile = certfile, keyfile
        self.out_root = out_root or os.path.join(load_settings().staging_dir, "remote")
        os.makedirs(self.out_root, exist_ok=True)
        self.loopback_only = is_loopback(host)
        self._token = token
        self.runs: dict[str, RemoteRun] = {}
        self.sessions: dict[str, SteerSession] = {}
        self._starting = 0
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self.log_path = os.path.join(self.out_root, "remote-actions.jsonl")
        self.app = self._build_app()
        self._uvicorn: typing.Any = None
        self._thread: typing.Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        scheme = "https" if self.certfile else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    # -- serving ---------------------------------------------------------------------------
    def start(self) -> str:
        """Bind, serve on a background thread and return the URL once it answers."""
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto given: asyncio sets TCP_NODELAY only on sockets whose proto says TCP (else ~40 ms per answer)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise EmedgeError(f"cannot listen on {self.host}:{self.port} ({e.strerror}); "
                              "choose another --port") from None
        self.port = sock.getsockname()[1]
        # log_config None: uvicorn logs through the host's logging as it is (Swift replaces sys.stdout
        # with an object uvicorn's own console formatter cannot use)
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                                ssl_certfile=self.certfile, ssl_keyfile=self.keyfile, timeout_keep_alive=5,
                                limit_concurrency=64, h11_max_incomplete_event_size=64 * 1024)
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [sock]},
                                        name="emedge-remote-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise EmedgeError(f"the server did not start on {self.url} (see the log)")
            time.sleep(0.02)
        self.log_action("-", "server started", 0, {"url": self.url, "instrument": self.instruments.name})
        return self.url

    def stop(self, wait_runs_s: float = 60.0) -> None:
        """Stop accepting requests, stop the runs after their current step (their files are written),
        close the instruments."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            runs = list(self.runs.values())
        for run in runs:
            run.stop()
        for run in runs:
            if run.thread.is_alive():
                run.thread.join(wait_runs_s)
        self.instruments.close()
        self.log_action("-", "server stopped", 0)
        self._uvicorn = self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the action log ---------------------------------------------------------------------
    def log_action(self, caller: str, action: str, status: int,
                   extra: typing.Optional[dict[str, typing.Any]] = None) -> dict[str, typing.Any]:
        entry = {"utc": _utc(), "caller": caller, "action": action, "status": status} | (extra or {})
        with self._log_lock, open(self.log_path, "a") as fp:
            fp.write(json.dumps(entry) + "\n")
        return entry

    # -- the application -----------------------------------------------------------------------
    def _build_app(self) -> typing.Any:
        table = [
            ("/v1/status", self._status, ["GET"]),
            ("/v1/instrument/state", self._state, ["GET"]),
            ("/v1/survey", self._survey, ["POST"]),
            ("/v1/measure", self._measure, ["POST"]),
            ("/v1/runs", self._runs, ["GET", "POST"]),
            ("/v1/runs/{id}", self._run_status, ["GET"]),
            ("/v1/runs/{id}/maps", self._run_maps, ["GET"]),
            ("/v1/runs/{id}/files/{name}", self._run_file, ["GET"]),
            ("/v1/runs/{id}/{verb}", self._run_control, ["POST"]),
            ("/v1/steer", self._steer_new, ["POST"]),
            ("/v1/steer/{id}", self._steer_delete, ["DELETE"]),
            ("/v1/steer/{id}/{verb}", self._steer_verb, ["POST"]),
        ]
        routes = [Route(path, _answer(self, handler), methods=methods) for path, handler, methods in table]
        app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
        return Guard(app, self)

    async def _body(self, request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limits.max_body:
                raise BadRequest(f"request body over {self.limits.max_body} bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _status(self, request: Request) -> Response:
        with self._lock:
            runs = [{"id": r.id, "state": r.status()["state"], "caller": r.caller} for r in self.runs.values()]
        return JSONResponse({"version": __version__, "instrument": self.instruments.name, "url": self.url,
                             "limits": dataclasses.asdict(self.limits), "runs": runs,
                             "sessions": sorted(self.sessions)})

    async def _state(self, request: Request) -> Response:
        from emedge_core.emd import jsonable

        signal = request.query_params.get("signal", "spectrum")
        if signal not in schemas.SIGNALS:
            raise BadRequest(f"signal must be one of {', '.join(schemas.SIGNALS)}")

        def read() -> dict[str, typing.Any]:
            inst, release = self.instruments.lease(signal)
            try:
                return inst.state()
            finally:
                release()

        state = await run_in_threadpool(read)
        return Response(json.dumps(state, default=jsonable), media_type="application/json")

    async def _survey(self, request: Request) -> Response:
        req = schemas.parse(schemas.SignalRequest, await self._body(request))

        def take() -> bytes:
            inst, release = self.instruments.lease(req.signal)
            try:
                s = inst.survey()
            finally:
                release()
            return schemas.npz_bytes(image=s.image, pixel_size_nm=s.pixel_size_nm, origin_nm=s.origin_nm,
                                     channel=s.channel)

        return Response(await run_in_threadpool(take), media_type=NPZ)

    async def _measure(self, request: Request) -> Response:
        req = schemas.parse(schemas.MeasureRequest, await self._body(request))

        def take() -> bytes:
            inst, release = self.instruments.lease(req.signal)
            try:
                try:
                    f = inst.measure(np.asarray(req.positions, np.int64).reshape(-1, 2))
                except ValueError as e:
                    raise BadRequest(str(e)) from None
            finally:
                release()
            extra = {"energy_eV": f.energy_eV} if f.energy_eV is not None else (
                {"mrad_per_px": f.mrad_per_px} if f.mrad_per_px is not None else {})
            return schemas.npz_bytes(data=f.data, kind=f.kind, **extra)

        return Response(await run_in_threadpool(take), media_type=NPZ)

    async def _runs(self, request: Request) -> Response:
        if request.method == "GET":
            with self._lock:
                return JSONResponse([r.status() for r in self.runs.values()])
        req = schemas.parse(schemas.RunRequest, await self._body(request))
        caller = _caller(request)
        with self._lock:     # reserve a slot; the run is built (instrument leased) off the event loop
            active = [r for r in self.runs.values() if r.thread.is_alive()]
            if len(active) + self._starting >= self.limits.max_runs:
                raise BadRequest(f"{len(active) + self._starting} run(s) already in progress "
                                 f"(limit {self.limits.max_runs}); stop one or wait", 409)
            self._starting += 1
        try:
            run = await run_in_threadpool(RemoteRun, self, req, caller)
            with self._lock:
                self.runs[run.id] = run
                ended = [k for k, r in self.runs.items() if r.status()["state"] in ENDED]
                for k in ended[:max(0, len(ended) - self.limits.kept_runs)]:
                    del self.runs[k]
                run.thread.start()
        finally:
            with self._lock:
                self._starting -= 1
        return JSONResponse({"id": run.id, "state": "running", "out_dir": run.out_dir}, status_code=201)

    def _run(self, request: Request) -> RemoteRun:
        with self._lock:
            run = self.runs.get(request.path_params["id"])
        if run is None:
            raise BadRequest(f"no run {request.path_params['id'][:40]!r} (GET /v1/runs lists them)", 404)
        return run

    async def _run_status(self, request: Request) -> Response:
        return JSONResponse(self._run(request).status())

    async def _run_control(self, request: Request) -> Response:
        run, verb = self._run(request), request.path_params["verb"]
        actions = {"pause": run.pause, "resume": run.resume, "stop": run.stop}
        if verb not in actions:
            raise BadRequest(f"unknown run action {verb[:40]!r}; use pause, resume or stop", 404)
        await self._body(request)
        actions[verb]()
        return JSONResponse(run.status())

    async def _run_maps(self, request: Request) -> Response:
        maps = self._run(request).maps()
        return Response(await run_in_threadpool(lambda: schemas.npz_bytes(**maps)), media_type=NPZ)

    async def _run_file(self, request: Request) -> Response:
        run, name = self._run(request), request.path_params["name"]
        if name not in RESULT_FILES:
            raise BadRequest(f"no file {name[:40]!r}; a run has {', '.join(RESULT_FILES)}", 404)
        path = run.files.get(RESULT_FILES[name])
        if path is None:
            raise BadRequest(f"run {run.id} has not written its files yet (state {run.status()['state']})", 409)
        return FileResponse(path, filename=name)

    async def _steer_new(self, request: Request) -> Response:
        req = schemas.parse(schemas.SteerRequest, await self._body(request))
        with self._lock:
            if len(self.sessions) >= self.limits.max_sessions:
                raise BadRequest(f"{len(self.sessions)} steering sessions open (limit {self.limits.max_sessions}); "
                                 "DELETE /v1/steer/{id} one", 409)
        session = await run_in_threadpool(SteerSession, self, req, _caller(request))
        with self._lock:
            self.sessions[session.id] = session
        return JSONResponse({"id": session.id, "n_candidates": len(session.steerer.patches),
                             "survey_shape": list(session.survey_shape)}, status_code=201)

    def _session(self, request: Request) -> SteerSession:
        with self._lock:
            s = self.sessions.get(request.path_params["id"])
        if s is None:
            raise BadRequest(f"no steering session {request.path_params['id'][:40]!r}", 404)
        return s

    async def _steer_delete(self, request: Request) -> Response:
        s = self._session(request)
        with self._lock:
            self.sessions.pop(s.id, None)
        return JSONResponse({"id": s.id, "deleted": True})

    async def _steer_verb(self, request: Request) -> Response:
        s, verb = self._session(request), request.path_params["verb"]
        body = await self._body(request)
        if verb == "suggest":
            req = schemas.parse(schemas.SuggestRequest, body)
            return JSONResponse({"positions": await run_in_threadpool(s.suggest, req.n)})
        if verb == "observe":
            obs = schemas.parse(schemas.ObserveRequest, body)
            return JSONResponse({"n_observed": await run_in_threadpool(s.observe, obs.positions, obs.values)})
        raise BadRequest(f"unknown steering action {verb[:40]!r}; use suggest or observe", 404)


def _caller(request: Request) -> str:
    c = request.client
    return f"{c.host}:{c.port}" if c is not None else "unknown"


def _answer(server: RemoteServer, handler: typing.Callable[[Request], typing.Awaitable[Response]]) \
        -> typing.Callable[[Request], typing.Awaitable[Response]]:
    """Wrap a route: one JSON error per bad request, and the request in the action log (and in the
    run's provenance when it names a run)."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            response = await handler(request)
        except BadRequest as e:
            response = _error(str(e), e.status)
        except EmedgeError as e:
            response = _error(str(e), 400)
        except Exception as e:     # a device error: one line to the caller, the traceback in the log
            LOG.exception("remote request %s %s failed", request.method, request.url.path)
            response = _error(f"internal error: {type(e).__name__}", 500)
        entry = server.log_action(_caller(request), f"{request.method} {request.url.path}", response.status_code)
        run_id = request.path_params.get("id")
        if run_id and request.url.path.startswith("/v1/runs/"):
            with server._lock:
                run = server.runs.get(run_id)
            if run is not None:
                run.record(entry)
        elif request.url.path == "/v1/runs" and request.method == "POST" and response.status_code == 201:
            with server._lock:
                run = server.runs.get(json.loads(bytes(response.body))["id"])
            if run is not None:
                run.record(entry)
        return response

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    e = typing.cast(HTTPException, exc)
    text = {404: "no such route (see docs/remote.md)", 405: f"{request.method} is not allowed here"}
    return _error(text.get(e.status_code, str(e.detail)), e.status_code)


class Guard:
    """ASGI middleware in front of every route: address, token, rate and size checks (module doc)."""

    def __init__(self, app: typing.Any, server: RemoteServer) -> None:
        self.app, self.server = app, server
        self._buckets: dict[str, tuple[float, float]] = {}   # host -> (tokens, monotonic time)

    async def __call__(self, scope: dict[str, typing.Any], receive: typing.Any, send: typing.Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":          # websockets: not offered
            await send({"type": "websocket.close", "code": 1008})
            return
        client = scope.get("client") or (None, 0)
        host = client[0]
        caller = f"{host}:{client[1]}"
        action = f"{scope['method']} {scope['path'][:200]}"
        refusal = self._refusal(host, scope)
        if refusal is not None:
            message, status = refusal
            self.server.log_action(caller, action, status, {"refused": message})
            response = _error(message, status)
            if status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, host: typing.Optional[str], scope: dict[str, typing.Any]) -> typing.Optional[tuple[str, int]]:
        s = self.server
        if s.loopback_only and not is_loopback(host):
            return (f"refused: the server listens on loopback only and {host} is not this machine "
                    "(start it with --host to serve other machines)", 403)
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not token_matches(given.strip() or None, s._token):
            return ("refused: missing or wrong token (send 'Authorization: Bearer <token>' with the token "
                    "from --token-file)", 401)
        if not self._allow(host or "?"):
            return (f"refused: over {s.limits.rate:g} requests per second; slow down", 429)
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return ("Content-Length is not a number", 400)
            if n > s.limits.max_body:
                return (f"request body over {s.limits.max_body} bytes", 413)
        return None

    def _allow(self, host: str) -> bool:
        """Token bucket per caller address: ``rate`` per second, ``burst`` at most."""
        lim = self.server.limits
        now = time.monotonic()
        tokens, then = self._buckets.get(host, (float(lim.burst), now))
        tokens = min(float(lim.burst), tokens + (now - then) * lim.rate)
        if tokens < 1.0:
            self._buckets[host] = (tokens, now)
            return False
        self._buckets[host] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:      # forget idle callers
            self._buckets = {h: v for h, v in self._buckets.items() if now - v[1] < 60}
        return True


def serve_until_signal(server: RemoteServer, on_ready: typing.Callable[[str], None]) -> None:
    """Start ``server``, call ``on_ready(url)``, block until SIGTERM or SIGINT, then stop it cleanly."""
    import signal

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        on_ready(server.start())
        while not stop.wait(0.5):
            if not server.running:
                raise EmedgeError("the server stopped by itself (see the log)")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["Guard", "Instruments", "Limits", "RemoteRun", "RemoteServer", "SteerSession", "serve_until_signal"]
