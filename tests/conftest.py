"""Shared fixtures. Each test module keeps its own data small: the suite runs on 2 cores."""
from __future__ import annotations

import os

import numpy as np
import pytest
import requests


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    """The REST URL, user and token; fail in CI, skip elsewhere, when Slurm is not up."""
    env = {k: os.environ.get(k, "") for k in ("SLURM_REST_URL", "SLURM_REST_USER", "SLURM_REST_TOKEN")}
    reason = ""
    if not all(env.values()):
        reason = "SLURM_REST_URL/USER/TOKEN not set: run eval \"$(bash scripts/start-slurm.sh)\" (as root) first"
    else:
        try:
            requests.get(env["SLURM_REST_URL"] + "/openapi/v3", timeout=3)
        except requests.RequestException as e:
            reason = f"slurmrestd at {env['SLURM_REST_URL']} is not answering ({type(e).__name__})"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Slurm is not up: " + reason)
        pytest.skip(reason)
    return env
