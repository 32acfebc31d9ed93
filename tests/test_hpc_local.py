"""hpc_client without a cluster: the local backend, staging checksums, the registry, config,
the Slurm REST dialects (documented JSON shapes of v0.0.39+), the job kinds and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import typing

import h5py
import numpy as np
import pytest

from emedge_core.jobs import reduce_emd_job, retrain_job
from hpc_client import (ConfigError, JobFailed, JobNotFound, JobSpec, JobState, Resources, Secret, StagingError,
                        open_client)
from hpc_client import config, staging
from hpc_client.backends import slurm_state
from hpc_client.backends.slurmrest import Dialect
from hpc_client.client import Client


@pytest.fixture(autouse=True)
def isolated(tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMEDGE_HPC_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("EMEDGE_HPC_STAGING", str(tmp_path / "staging"))
    monkeypatch.setenv("EMEDGE_HPC_CONFIG", str(tmp_path / "hpc.toml"))
    for var in ("SLURM_REST_URL", "SLURM_REST_USER", "SLURM_REST_TOKEN"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def client() -> Client:
    c = open_client("local")
    c.poll, c.max_poll = 0.05, 0.2
    return c


def test_round_trip_with_staging(client: Client, tmp_path: typing.Any) -> None:
    src = tmp_path / "in.txt"
    src.write_text("abc\n")
    job = client.submit(JobSpec(script="rev in.txt > out.txt\n", stage_in=[str(src)], stage_out=["out.txt"]))
    assert job.id.startswith("local:")
    done = client.wait(job.id, timeout=30)
    assert (done.state, done.exit_code, done.outputs) == (JobState.COMPLETED, 0, ["out.txt"])
    assert [open(p).read() for p in client.fetch(job.id, str(tmp_path / "back"))] == ["cba\n"]


def test_command_and_environment(client: Client, tmp_path: typing.Any) -> None:
    job = client.submit(JobSpec(command=["sh", "-c", 'echo "$GREETING" > g.txt'], environment={"GREETING": "hi there"},
                                stage_out=["g.txt", "never-written.txt"]))
    done = client.wait(job.id, timeout=30)
    assert done.outputs == ["g.txt"]                     # only what the job produced
    assert open(client.fetch(job.id, str(tmp_path / "b"))[0]).read() == "hi there\n"


def test_failed_job_has_exit_code_and_stderr_tail(client: Client) -> None:
    job = client.submit(JobSpec(script="echo oops >&2\nexit 4\n"))
    done = client.wait(job.id, timeout=30)
    assert (done.state, done.exit_code) == (JobState.FAILED, 4) and "oops" in done.stderr_tail
    with pytest.raises(JobFailed, match=r"FAILED \(exit code 4\)"):
        client.wait(job.id, check=True)


def test_same_idempotency_key_never_runs_twice(client: Client, tmp_path: typing.Any) -> None:
    spec = JobSpec(script="echo run >> count.txt\n")
    first, second = client.submit(spec), client.submit(spec)
    assert first.id == second.id
    client.wait(first.id, timeout=30)
    assert (tmp_path / "staging" / spec.idempotency_key / "count.txt").read_text() == "run\n"
    other = Client(client.backend, type(client.registry)(str(tmp_path / "another-registry.json")))
    assert other.submit(spec).id == first.id             # found on the backend by its key, not resubmitted


def test_cancel_running_finished_and_unknown(client: Client) -> None:
    running = client.submit(JobSpec(script="sleep 30\n"))
    assert client.status(running.id).state == JobState.RUNNING
    assert client.cancel(running.id).state == JobState.CANCELLED
    finished = client.submit(JobSpec(script="true\n"))
    client.wait(finished.id, timeout=30)
    assert client.cancel(finished.id).state == JobState.COMPLETED
    with pytest.raises(JobNotFound):
        client.cancel("local:nosuchjob")


def test_corrupted_input_is_caught_on_the_node(client: Client, tmp_path: typing.Any) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(b"\x00" * 100)
    spec = JobSpec(script="echo ran > ran.txt\n", stage_in=[str(src)])
    staged = staging.stage(client.backend.stager, spec)
    (tmp_path / "staging" / staged.rel / "data.bin").write_bytes(b"\x01" * 100)     # damaged on the NAS
    native = client.backend.submit(spec, staged)
    for _ in range(300):
        status = client.backend.status(native)
        if status.state.terminal:
            break
        time.sleep(0.02)
    assert (status.state, status.exit_code) == (JobState.FAILED, 97)
    assert not (tmp_path / "staging" / staged.rel / "ran.txt").exists()


def test_corrupted_output_is_caught_on_fetch(client: Client, tmp_path: typing.Any) -> None:
    job = client.submit(JobSpec(script="echo good > r.txt\n", stage_out=["r.txt"]))
    client.wait(job.id, timeout=30)
    (tmp_path / "staging" / job.id.split(":")[1] / "r.txt").write_text("bad\n")
    with pytest.raises(StagingError, match="checksum"):
        client.fetch(job.id, str(tmp_path / "back"))
    assert not (tmp_path / "back" / "r.txt").exists()


def test_missing_stage_in_file(client: Client) -> None:
    with pytest.raises(StagingError, match="does not exist"):
        client.submit(JobSpec(script="true", stage_in=["/no/such/file"]))


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        JobSpec()
    with pytest.raises(ValueError, match="relative"):
        JobSpec(script="true", stage_out=["../x"])
    assert JobSpec(command=["echo", "a b"]).script_text() == "#!/bin/bash\nexec echo 'a b'\n"


def test_config_file_env_and_secrets(tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tok").write_text("file-token\n")
    (tmp_path / "hpc.toml").write_text(f'[slurmrest]\nurl = "http://127.0.0.1:1"\nuser = "alice"\n'
                                       f'token_file = "{tmp_path / "tok"}"\n')
    s = config.settings("slurmrest")
    assert (s["url"], s["user"], s["token"].value) == ("http://127.0.0.1:1", "alice", "file-token")
    assert "file-token" not in repr(s) and str(Secret("x")) == "Secret('***')"
    monkeypatch.setenv("SLURM_REST_USER", "bob")
    assert config.settings("slurmrest", url="http://127.0.0.1:2")["user"] == "bob"
    assert config.settings("slurmrest", url="http://127.0.0.1:2")["url"] == "http://127.0.0.1:2"
    (tmp_path / "hpc.toml").write_text("[slurmrest]\nuser = \n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.settings("slurmrest")


def test_slurmrest_needs_its_settings() -> None:
    with pytest.raises(ConfigError, match="SLURM_REST_URL"):
        open_client("slurmrest")


@pytest.mark.parametrize("version", ["v0.0.40", "v0.0.41"])
def test_newer_slurm_rest_shapes(version: str, tmp_path: typing.Any) -> None:
    """v0.0.39+ JSON shapes as documented (no such slurmrestd here to run against)."""
    d = Dialect(version)
    staged = staging.StagedJob("k", "/nas/k", "#!/bin/bash\n", "/nas/k/o", "/nas/k/e")
    body = d.submit_body(JobSpec(script="true", environment={"A": "1"}, resources=Resources(time_limit_min=7),
                                 idempotency_key="k"), staged, "debug")
    job = body["job"]
    assert job["time_limit"] == {"set": True, "infinite": False, "number": 7} and "A=1" in job["environment"]
    assert ("script" in job) == (version == "v0.0.41") and job["partition"] == "debug"
    record = {"job_state": ["FAILED"], "exit_code": {"status": ["EXITED"], "return_code": {"set": True, "number": 3}},
              "submit_time": {"set": True, "number": 100}, "end_time": {"set": True, "number": 200}}
    ns = d.native(record)
    assert (ns.state, ns.exit_code, ns.submitted, ns.ended) == (JobState.FAILED, 3, 100.0, 200.0)
    killed = {"job_state": ["CANCELLED"], "exit_code": {"status": ["SIGNALED"], "signal": {"id": {"number": 9}}}}
    assert d.native(killed).exit_code == 137


def test_slurm_states_and_wait_status() -> None:
    assert slurm_state("CANCELLED by 0") == JobState.CANCELLED and slurm_state("COMPLETING") == JobState.RUNNING
    assert slurm_state("OUT_OF_MEMORY") == JobState.FAILED and slurm_state("TIMEOUT") == JobState.TIMEOUT
    assert Dialect.exit_code(768) == 3 and Dialect.exit_code(15) == 143


def _experiment(path: typing.Any) -> None:
    """A real experiment.h5: a 10-point run on a 24 px twin, written by `write_experiment`."""
    from emedge_core.experiment import Experiment, ExperimentConfig
    from emedge_core.experiment_file import write_experiment
    from emedge_core.twin import DigitalTwin

    cfg = ExperimentConfig(budget=10, seeds=4, window=8, components=8, model={"iters": 10, "warm_iters": 5})
    result = Experiment(DigitalTwin(size=24, seed=0), "eels_peak_energy", cfg).run()
    paths = write_experiment(result, str(path.parent))
    assert paths["h5"] == str(path)


def test_retrain_job_kind_locally(client: Client, tmp_path: typing.Any) -> None:
    from emedge_core import emd

    _experiment(tmp_path / "experiment.h5")
    job = client.submit(retrain_job(str(tmp_path / "experiment.h5"), iters=15))
    done = client.wait(job.id, timeout=120)
    assert done.state == JobState.COMPLETED, done.stderr_tail
    assert json.loads(done.stdout_tail.strip().splitlines()[-1])["n_measurements"] == 10
    (maps,) = client.fetch(job.id, str(tmp_path / "back"))
    pred = emd.read(maps, "prediction")
    assert pred.shape == (24, 24) and np.isfinite(pred[4:21, 4:21]).all() and np.isnan(pred[0, 0])


def test_retrain_refits_like_the_live_loop_with_the_spatial_term(tmp_path: typing.Any) -> None:
    """`emedge retrain` gives the maps of the live loop's refit (features + probe coordinates, the run's
    model settings) on the same measurements; the old cluster retrain fitted without the coordinates."""
    from emedge_core import emd
    from emedge_core.dkl import DKLRegressor
    from emedge_core.patches import make_patches

    path = tmp_path / "experiment.h5"
    _experiment(path)
    r = subprocess.run([sys.executable, "-m", "emedge_core", "retrain", str(path), "--out", str(tmp_path / "m.emd"),
                        "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["spatial"] is True and summary["n_measurements"] == 10
    with h5py.File(path, "r") as f:
        survey, pos, y = (emd.value(f["experiment"][k]) for k in ("survey", "positions", "values"))
    patches = make_patches(survey, 8, "restrict", None, 8)     # the run's window, patch mode, components
    idx = patches.lookup(pos)

    def refit(with_coords: bool) -> tuple[np.ndarray, np.ndarray]:
        model = DKLRegressor(patches.features.shape[1], window=8, seed=0, iters=10, warm_iters=5)
        model.fit(patches.features[idx], y, coords=patches.coords[idx] if with_coords else None)
        post = model.posterior(patches.features, coords=patches.coords if with_coords else None)
        return patches.to_map(post.mean), patches.to_map(post.std)

    live_mean, live_std = refit(True)
    np.testing.assert_allclose(emd.read(str(tmp_path / "m.emd"), "prediction"), live_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(emd.read(str(tmp_path / "m.emd"), "uncertainty"), live_std, rtol=1e-4, atol=1e-6)
    flat_mean, _ = refit(False)            # what the cluster retrain used to compute: no spatial term
    assert not np.allclose(flat_mean, live_mean, equal_nan=True, rtol=1e-3)
    r = subprocess.run([sys.executable, "-m", "emedge_core", "retrain", str(tmp_path / "none.h5")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("emedge: error:") and "Traceback" not in r.stderr


def test_reduce_job_kind_runs_emedge_scalarize(client: Client, tmp_path: typing.Any) -> None:
    from emedge_core import emd

    frames = np.random.default_rng(0).poisson(5, size=(6, 5, 16, 16)).astype(np.float32)
    emd.write(str(tmp_path / "scan.emd"), {"data": frames}, codec="raw")
    spec = reduce_emd_job(str(tmp_path / "scan.emd"), {"name": "virtual_bf"})
    assert spec.command is not None and list(spec.command[1:5]) == ["-m", "emedge_core", "scalarize", "scan.emd"]
    done = client.wait(client.submit(spec).id, timeout=60)
    assert done.state == JobState.COMPLETED, done.stderr_tail
    assert sorted(done.outputs) == ["reduced.npy", "reduced.reason.npy"]
    reduced = np.load(sorted(client.fetch(done.id, str(tmp_path / "back")))[0])
    assert reduced.shape == (6, 5) and np.isfinite(reduced).all()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emedge_core", "jobs", *args], capture_output=True, text=True,
                          env=dict(os.environ))


def test_cli_local_submit_wait_status_cancel_fetch(tmp_path: typing.Any) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\nwc -c < in.txt > n.txt\n")
    (tmp_path / "in.txt").write_text("12345")
    r = _cli("submit", "--backend", "local", "--script", str(script), "--stage-in", str(tmp_path / "in.txt"),
             "--stage-out", "n.txt", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out) == {"id", "state", "exit_code", "outputs"} and out["state"] == "COMPLETED"
    assert json.loads(_cli("status", out["id"], "--json").stdout.splitlines()[-1]) == out
    assert json.loads(_cli("cancel", out["id"], "--json").stdout.splitlines()[-1])["state"] == "COMPLETED"
    fetched = _cli("fetch", out["id"], str(tmp_path / "got"))
    assert open(fetched.stdout.strip()).read().strip() == "5"
    script.write_text("sleep 30\n")
    r = _cli("submit", "--script", str(script), "--json")
    job_id = json.loads(r.stdout.splitlines()[-1])["id"]
    assert _cli("cancel", job_id).stdout.startswith(f"{job_id}: CANCELLED")


def test_cli_failure_and_errors(tmp_path: typing.Any) -> None:
    script = tmp_path / "bad.sh"
    script.write_text("echo cannot open detector >&2\nexit 2\n")
    r = _cli("submit", "--script", str(script), "--wait", "--json")
    assert r.returncode == 1 and "cannot open detector" in r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["exit_code"] == 2
    for args, message in ((["submit", "--script", str(tmp_path / "none.sh")], "cannot read --script"),
                          (["status", "local:nope"], "JobNotFound"),
                          (["status", "nobackend"], "JobNotFound"),
                          (["submit", "--backend", "slurmrest", "--script", str(script)], "slurmrest needs a URL")):
        r = _cli(*args)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("emedge: error:"), r.stderr
        assert message in r.stderr and "Traceback" not in r.stderr


def test_cli_reads_the_hpc_settings_like_the_panel(tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`emedge jobs submit` without --backend/--url takes [hpc] backend and url from the facility settings."""
    script = tmp_path / "job.sh"
    script.write_text("true\n")
    conf = tmp_path / "emedge.toml"
    conf.write_text('[hpc]\nbackend = "slurmrest"\nurl = "http://127.0.0.1:9"\n')     # nothing listens on port 9
    monkeypatch.setenv("EMEDGE_CONFIG", str(conf))
    monkeypatch.setenv("EMEDGE_SYSTEM_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("SLURM_REST_USER", "me")
    monkeypatch.setenv("SLURM_REST_TOKEN", "t0ken-value-not-printed")
    r = _cli("submit", "--script", str(script))
    assert r.returncode == 2 and "127.0.0.1:9" in r.stderr and "Unreachable" in r.stderr, r.stderr
    assert "t0ken-value-not-printed" not in r.stderr
    r = _cli("submit", "--backend", "local", "--script", str(script), "--wait", "--json")     # the flag wins
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["state"] == "COMPLETED", r.stderr
    conf.write_text('[hpc]\nbackend = "pbs"\n')
    r = _cli("submit", "--script", str(script))
    assert r.returncode == 2 and "hpc.backend must be one of local, slurmrest, sfapi, not 'pbs'" in r.stderr
