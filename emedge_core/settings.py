"""Facility settings: HPC endpoint, staging directory and GPU use, from TOML files and the environment.

Later sources override earlier ones, key by key:

1. built-in defaults (:class:`Settings`);
2. the system file, ``/etc/emedge/config.toml`` (a facility admin's defaults; the path can be
   moved with ``EMEDGE_SYSTEM_CONFIG``);
3. the user file, ``$XDG_CONFIG_HOME/emedge/config.toml`` (default ``~/.config/emedge/config.toml``;
   ``EMEDGE_CONFIG`` names another file);
4. environment variables ``EMEDGE_HPC_URL``, ``EMEDGE_HPC_BACKEND``, ``EMEDGE_STAGING_DIR``, ``EMEDGE_GPU``.

A file looks like::

    [hpc]
    url = "https://hpc.example.org/slurm/v0.0.40"
    backend = "slurmrest"          # local | slurmrest | sfapi
    [staging]
    dir = "/data/emedge-staging"
    [compute]
    gpu = "auto"                   # "auto" | true | false

Unknown keys and wrong types raise :class:`~emedge_core.EmedgeError` naming the file.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import tomllib
import typing

from emedge_core import EmedgeError

SYSTEM_CONFIG = "/etc/emedge/config.toml"

#: (section, key) in the TOML files -> Settings field
_KEYS = {("hpc", "url"): "hpc_url", ("hpc", "backend"): "hpc_backend", ("staging", "dir"): "staging_dir",
         ("compute", "gpu"): "gpu"}
_ENV = {"EMEDGE_HPC_URL": "hpc_url", "EMEDGE_HPC_BACKEND": "hpc_backend", "EMEDGE_STAGING_DIR": "staging_dir",
        "EMEDGE_GPU": "gpu"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """hpc_url: REST endpoint of the HPC scheduler ("" = run jobs locally); hpc_backend: ``local``,
    ``slurmrest`` or ``sfapi``; staging_dir: where outgoing files are written before transfer;
    gpu: ``"auto"`` (use one when present), ``True`` or ``False``; sources: the files read, in order."""

    hpc_url: str = ""
    hpc_backend: str = "local"
    staging_dir: str = dataclasses.field(default_factory=lambda: str(pathlib.Path.home() / "emedge-staging"))
    gpu: typing.Union[bool, str] = "auto"
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from emedge_core.choices import HPC_BACKENDS

        if self.hpc_backend not in HPC_BACKENDS:
            where = ", ".join(self.sources) or "the defaults"
            raise EmedgeError(f"hpc.backend must be one of {', '.join(HPC_BACKENDS)}, not {self.hpc_backend!r} "
                              f"(from {where})")
        if not (isinstance(self.gpu, bool) or self.gpu == "auto"):
            raise EmedgeError(f'compute.gpu must be true, false or "auto", not {self.gpu!r}')

    @property
    def scalarize_backend(self) -> str:
        """The scalarizers' backend (:meth:`emedge_core.scalarize.Scalarizer.use`): ``"numpy"`` when the
        GPU is off, else ``"auto"`` (CuPy or torch on CUDA when present, NumPy otherwise)."""
        return "numpy" if self.gpu is False else "auto"


def _gpu(value: typing.Any, where: str) -> typing.Union[bool, str]:
    if isinstance(value, bool) or value == "auto":
        return typing.cast(typing.Union[bool, str], value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    if text == "auto":
        return "auto"
    raise EmedgeError(f"{where}: gpu must be true, false or \"auto\", not {value!r}")


def _read(path: pathlib.Path) -> dict[str, typing.Any]:
    try:
        with open(path, "rb") as fp:
            doc = tomllib.load(fp)
    except tomllib.TOMLDecodeError as e:
        raise EmedgeError(f"{path}: not valid TOML: {e}") from None
    out: dict[str, typing.Any] = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise EmedgeError(f"{path}: top-level key {section!r} must be a [section]")
        for key, value in table.items():
            field = _KEYS.get((section, key))
            if field is None:
                known = ", ".join(f"{s}.{k}" for s, k in _KEYS)
                raise EmedgeError(f"{path}: unknown setting {section}.{key} (known: {known})")
            if field == "gpu":
                value = _gpu(value, str(path))
            elif not isinstance(value, str):
                raise EmedgeError(f"{path}: {section}.{key} must be a string")
            out[field] = value
    return out


def config_paths(env: typing.Mapping[str, str] = os.environ) -> list[pathlib.Path]:
    """The system file, then the user file, in the order they are read."""
    user = env.get("EMEDGE_CONFIG")
    if not user:
        base = env.get("XDG_CONFIG_HOME") or str(pathlib.Path.home() / ".config")
        user = str(pathlib.Path(base) / "emedge" / "config.toml")
    return [pathlib.Path(env.get("EMEDGE_SYSTEM_CONFIG", SYSTEM_CONFIG)), pathlib.Path(user)]


def load_settings(env: typing.Mapping[str, str] = os.environ) -> Settings:
    """Defaults, overridden by the system file, the user file and the environment (see module doc)."""
    values: dict[str, typing.Any] = {}
    sources: list[str] = []
    for path in config_paths(env):
        if path.is_file():
            values.update(_read(path))
            sources.append(str(path))
    for name, field in _ENV.items():
        if env.get(name):
            values[field] = _gpu(env[name], name) if field == "gpu" else env[name]
            sources.append(f"${name}")
    return Settings(**values, sources=tuple(sources))
