"""Backend settings from (lowest to highest priority) the config file, the environment, and
explicit arguments.

Config file: ``$EMEDGE_HPC_CONFIG`` or ``~/.config/emedge/hpc.toml``, one table per backend::

    [slurmrest]
    url = "https://slurm.example.org:6820"
    user = "me"
    token_file = "~/.slurm-token"      # or token = "..." (keep the file mode 0600)
    staging_dir = "/nas/emedge-jobs"   # shared with the nodes
    node_staging_dir = "/mnt/nas/emedge-jobs"   # the same directory as the nodes see it

    [sfapi]
    url = "https://api.nersc.gov/api/v1.2"
    token_url = "https://oidc.nersc.gov/c2id/token"
    client_id = "..."
    client_secret_file = "~/.superfacility/secret"
    machine = "perlmutter"
    remote_dir = "/pscratch/sd/m/me/emedge-jobs"

Environment: ``SLURM_REST_URL``, ``SLURM_REST_USER``, ``SLURM_REST_TOKEN`` (or
``SLURM_REST_TOKEN_FILE``), ``SLURM_REST_PARTITION``, ``SLURM_REST_API_VERSION``;
``SFAPI_URL``, ``SFAPI_TOKEN_URL``, ``SFAPI_CLIENT_ID``, ``SFAPI_CLIENT_SECRET`` (or
``SFAPI_CLIENT_SECRET_FILE``), ``SFAPI_ACCESS_TOKEN``, ``SFAPI_MACHINE``, ``SFAPI_REMOTE_DIR``;
``EMEDGE_HPC_STAGING`` and ``EMEDGE_HPC_NODE_STAGING`` for every backend.
Secrets are returned wrapped in :class:`~hpc_client.transport.Secret`.
"""
from __future__ import annotations

import os
import tomllib
import typing

from hpc_client.errors import ConfigError
from hpc_client.transport import Secret

BACKENDS = ("local", "slurmrest", "sfapi")
ENV = {
    "slurmrest": {"url": "SLURM_REST_URL", "user": "SLURM_REST_USER", "token": "SLURM_REST_TOKEN",
                  "token_file": "SLURM_REST_TOKEN_FILE", "partition": "SLURM_REST_PARTITION",
                  "api_version": "SLURM_REST_API_VERSION"},
    "sfapi": {"url": "SFAPI_URL", "token_url": "SFAPI_TOKEN_URL", "client_id": "SFAPI_CLIENT_ID",
              "client_secret": "SFAPI_CLIENT_SECRET", "client_secret_file": "SFAPI_CLIENT_SECRET_FILE",
              "access_token": "SFAPI_ACCESS_TOKEN", "machine": "SFAPI_MACHINE", "remote_dir": "SFAPI_REMOTE_DIR"},
    "local": {},
}
COMMON_ENV = {"staging_dir": "EMEDGE_HPC_STAGING", "node_staging_dir": "EMEDGE_HPC_NODE_STAGING"}
SECRETS = ("token", "client_secret", "access_token")


def config_path() -> str:
    return os.environ.get("EMEDGE_HPC_CONFIG") or os.path.expanduser("~/.config/emedge/hpc.toml")


def default_staging_dir() -> str:
    return os.path.join(os.path.expanduser("~/.cache"), "emedge", "hpc-jobs")


def settings(backend: str, **explicit: typing.Any) -> dict[str, typing.Any]:
    """The merged settings of ``backend``; ``*_file`` entries are read into their secret."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    out: dict[str, typing.Any] = {}
    path = config_path()
    if os.path.exists(path):
        try:
            with open(path, "rb") as fp:
                table = tomllib.load(fp)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from None
        out.update(table.get(backend, {}))
    for key, var in (ENV[backend] | COMMON_ENV).items():
        if os.environ.get(var):
            out[key] = os.environ[var]
    out.update({k: v for k, v in explicit.items() if v is not None})
    for key in SECRETS:
        file_key = f"{key}_file"
        if not out.get(key) and out.get(file_key):
            try:
                with open(os.path.expanduser(out[file_key])) as fp:
                    out[key] = fp.read().strip()
            except OSError as e:
                raise ConfigError(f"cannot read {file_key} {out[file_key]}: {e.strerror}") from None
        out.pop(file_key, None)
        if out.get(key) and not isinstance(out[key], Secret):
            out[key] = Secret(str(out[key]))
    out.setdefault("staging_dir", default_staging_dir())
    return out
