"""HTTP sessions with retries configured (urllib3 ``Retry``), timeouts, and secrets kept out of sight.

Idempotent requests (GET, PUT, DELETE) are retried on connection errors, read errors and
502/503/504 with exponential backoff. POST is retried only when the connection could not be
made at all (the request never left); a POST whose answer is lost raises
:class:`SubmitAnswerLost`, and the client looks the job up by its idempotency key before
it submits again.
"""
from __future__ import annotations

import dataclasses
import typing

import requests
import requests.adapters
import urllib3.util.retry

from hpc_client.errors import Unreachable


class Secret:
    """A token or password: usable as ``.value``, shown as ``***`` everywhere else."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


class SubmitAnswerLost(Unreachable):
    """A submit request may have reached the server, but its answer never came back."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. ``connect``/``read``/``status``: retries of each kind; the n-th retry
    waits ``backoff_factor * 2**(n-1)`` s, at most ``backoff_max``; ``timeout``: (connect, read) s.
    The defaults ride out a server restart of about 20 s."""

    connect: int = 8
    read: int = 3
    status: int = 4
    backoff_factor: float = 0.25
    backoff_max: float = 4.0
    timeout: tuple[float, float] = (3.05, 30.0)

    def retry(self) -> urllib3.util.retry.Retry:
        return urllib3.util.retry.Retry(
            total=None, connect=self.connect, read=self.read, status=self.status, other=0, redirect=0,
            allowed_methods=frozenset({"GET", "PUT", "DELETE", "HEAD"}), status_forcelist=(502, 503, 504),
            backoff_factor=self.backoff_factor, backoff_max=self.backoff_max, raise_on_status=False,
            respect_retry_after_header=True)


class Session:
    """A ``requests.Session`` bound to one base URL, with the retry policy mounted and a
    list of secrets that are scrubbed from any message built from a response."""

    def __init__(self, base_url: str, policy: RetryPolicy = RetryPolicy(),
                 headers: typing.Optional[dict[str, typing.Union[str, Secret]]] = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.http = requests.Session()
        adapter = requests.adapters.HTTPAdapter(max_retries=policy.retry())
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self.secrets: list[str] = []
        for key, value in (headers or {}).items():
            if isinstance(value, Secret):
                self.secrets.append(value.value)
                value = value.value
            self.http.headers[key] = value

    def scrub(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``."""
        for s in self.secrets:
            if s:
                text = text.replace(s, "***")
        return text

    def request(self, method: str, path: str, **kw: typing.Any) -> requests.Response:
        """One request (retried per the policy); connection trouble becomes :class:`Unreachable`
        (or :class:`SubmitAnswerLost` for a POST whose answer was lost)."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"
        kw.setdefault("timeout", self.policy.timeout)
        try:
            return self.http.request(method, url, **kw)
        except (requests.ConnectionError, requests.Timeout) as e:
            never_sent = isinstance(e, requests.ConnectTimeout) or _connect_failure(e)
            what = f"{method} {url.split('?')[0]}"
            if method == "POST" and not never_sent:
                raise SubmitAnswerLost(f"{what}: the answer was lost ({type(e).__name__})") from None
            raise Unreachable(f"{what} failed after retries: {self.scrub(_reason(e))}") from None


def _connect_failure(e: Exception) -> bool:
    reason = getattr(e.args[0], "reason", None) if e.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError) or isinstance(
        e.args[0] if e.args else None, urllib3.exceptions.NewConnectionError)


def _reason(e: Exception) -> str:
    inner = getattr(e.args[0], "reason", None) if e.args else None
    return str(inner or e)
