"""Facility settings: system file, user file, environment, in that order."""
from __future__ import annotations

import pathlib

import pytest

from emedge_core import EmedgeError
from emedge_core.settings import Settings, load_settings


def _env(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
    return {"EMEDGE_SYSTEM_CONFIG": str(tmp_path / "etc.toml"), "EMEDGE_CONFIG": str(tmp_path / "user.toml")} | extra


def test_defaults_when_no_file(tmp_path: pathlib.Path) -> None:
    s = load_settings(_env(tmp_path))
    assert s == Settings(staging_dir=s.staging_dir) and s.sources == () and s.gpu == "auto"


def test_system_then_user_then_environment(tmp_path: pathlib.Path) -> None:
    (tmp_path / "etc.toml").write_text('[hpc]\nurl = "https://hpc.site/slurm"\nbackend = "slurmrest"\n'
                                       '[staging]\ndir = "/data/stage"\n[compute]\ngpu = false\n')
    (tmp_path / "user.toml").write_text('[staging]\ndir = "/home/me/stage"\n')
    s = load_settings(_env(tmp_path))
    assert (s.hpc_url, s.hpc_backend, s.staging_dir, s.gpu) == ("https://hpc.site/slurm", "slurmrest", "/home/me/stage",
                                                                 False)
    assert s.sources == (str(tmp_path / "etc.toml"), str(tmp_path / "user.toml"))
    s = load_settings(_env(tmp_path, EMEDGE_GPU="on", EMEDGE_HPC_URL="http://127.0.0.1:6820"))
    assert s.gpu is True and s.hpc_url == "http://127.0.0.1:6820" and s.staging_dir == "/home/me/stage"
    assert s.sources[-2:] == ("$EMEDGE_HPC_URL", "$EMEDGE_GPU")


def test_user_file_from_xdg(tmp_path: pathlib.Path) -> None:
    (tmp_path / "emedge").mkdir()
    (tmp_path / "emedge" / "config.toml").write_text('[compute]\ngpu = "auto"\n[hpc]\nbackend = "sfapi"\n')
    s = load_settings({"EMEDGE_SYSTEM_CONFIG": str(tmp_path / "none.toml"), "XDG_CONFIG_HOME": str(tmp_path)})
    assert s.hpc_backend == "sfapi" and s.sources == (str(tmp_path / "emedge" / "config.toml"),)


@pytest.mark.parametrize("text, match", [
    ("[hpc]\nurll = 'x'\n", r"unknown setting hpc.urll"),
    ("[compute]\ngpu = 'maybe'\n", r"gpu must be true, false or \"auto\""),
    ("[staging]\ndir = 3\n", r"staging.dir must be a string"),
    ("gpu = true\n", r"must be a \[section\]"),
    ("[hpc\n", r"not valid TOML"),
    ("[hpc]\nbackend = 'pbs'\n", r"hpc.backend must be one of local, slurmrest, sfapi, not 'pbs'"),
])
def test_bad_files_name_the_file(tmp_path: pathlib.Path, text: str, match: str) -> None:
    (tmp_path / "user.toml").write_text(text)
    with pytest.raises(EmedgeError, match=match) as e:
        load_settings(_env(tmp_path))
    assert str(tmp_path / "user.toml") in str(e.value)


def test_gpu_switch_picks_the_scalarize_backend() -> None:
    assert [Settings(gpu=g).scalarize_backend for g in ("auto", True, False)] == ["auto", "auto", "numpy"]
