"""The shared secret of the remote-control server: a token file readable by its owner only.

The token is 43 URL-safe characters (32 random bytes, :func:`secrets.token_urlsafe`). It is
sent as ``Authorization: Bearer <token>`` and compared in constant time
(:func:`hmac.compare_digest`). It is never logged: the server's action log keeps the caller's
address and the request line only.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import pathlib
import secrets
import stat

from emedge_core import EmedgeError

DEFAULT_TOKEN_FILE = pathlib.Path.home() / ".config" / "emedge" / "remote-token"


def read_token(path: os.PathLike[str] | str) -> str:
    """The token in ``path``; refuses a file that others can read (it must be mode 0600)."""
    p = pathlib.Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text().strip()
    except OSError as e:
        raise EmedgeError(f"cannot read --token-file {p}: {e.strerror}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise EmedgeError(f"--token-file {p} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    if len(text) < 16 or any(c.isspace() for c in text):
        raise EmedgeError(f"--token-file {p} must hold one token of at least 16 characters")
    return text


def ensure_token(path: os.PathLike[str] | str | None = None) -> tuple[str, pathlib.Path]:
    """(token, file): the token in ``path`` if the file exists, else a new one written there
    (default :data:`DEFAULT_TOKEN_FILE`) with mode 0600 before any byte of it is written."""
    p = pathlib.Path(path) if path is not None else DEFAULT_TOKEN_FILE
    if p.exists():
        return read_token(p), p
    p.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise EmedgeError(f"cannot create --token-file {p}: {e.strerror}") from None
    with os.fdopen(fd, "w") as fp:
        fp.write(token + "\n")
    return token, p


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison of the presented token with the server's."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8"))


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for anything else, including None."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
