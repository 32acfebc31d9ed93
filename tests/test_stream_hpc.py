"""The follower as a cluster job (issue 15): the ``follow`` job kind (:func:`emedge_core.jobs.follow_job`)
submitted before the scan starts, on the local backend and on the real one-node Slurm of
scripts/start-slurm.sh, and a dask-jobqueue SLURMCluster of two one-core workers giving the same map
as one process. The Slurm tests skip (fail when CI=true) when Slurm is not up."""
from __future__ import annotations

import shutil
import threading
import typing

import numpy as np
import pytest

from emedge_core import emd
from emedge_core.jobs import follow_job
from emedge_core.stream import StreamResult, follow, stream
from emedge_core.twin import DigitalTwin
from hpc_client import JobState, open_client
from hpc_client.client import Client


def _isolate(tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMEDGE_HPC_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("EMEDGE_HPC_STAGING", str(tmp_path / "staging"))
    monkeypatch.setenv("EMEDGE_HPC_CONFIG", str(tmp_path / "no-config.toml"))


def _scan_while_job_runs(client: Client, tmp_path: typing.Any) -> None:
    """Submit the follow job, then stream a scan to the stage it watches; the job's map = the live map."""
    stage = str(tmp_path / "nas" / "scan1")
    job = client.submit(follow_job(stage, "virtual_bf", timeout_s=240))
    result: list[StreamResult] = []
    t = threading.Thread(target=lambda: result.append(
        stream(DigitalTwin(size=24, signal="diffraction"), "4d", (24, 24), str(tmp_path / "scan.h5"),
               stage=stage, dtype="uint16", block_rows=2)))
    t.start()
    done = client.wait(job.id, timeout=300)
    t.join()
    assert done.state == JobState.COMPLETED, done.stderr_tail
    (path,) = client.fetch(done.id, str(tmp_path / "back"))
    assert emd.metadata(path, "values")["follow"]["complete"]
    np.testing.assert_allclose(emd.read(path, "map"), np.load(result[0].scalar_map), rtol=1e-6)


def test_follow_job_kind_local(tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate(tmp_path, monkeypatch)
    c = open_client("local")
    c.poll, c.max_poll = 0.05, 0.5
    _scan_while_job_runs(c, tmp_path)


@pytest.mark.slurm
def test_follow_job_kind_on_slurm(slurm: dict[str, str], tmp_path: typing.Any,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate(tmp_path, monkeypatch)
    c = open_client("slurmrest")
    c.poll, c.max_poll = 0.1, 1.0
    _scan_while_job_runs(c, tmp_path)


@pytest.mark.slurm
def test_dask_jobqueue_two_one_core_workers(slurm: dict[str, str], tmp_path: typing.Any) -> None:
    jobqueue = pytest.importorskip("dask_jobqueue")
    distributed = pytest.importorskip("distributed")
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch not on PATH")
    stage = str(tmp_path / "st")
    stream(DigitalTwin(size=24, signal="diffraction"), "4d", (24, 24), str(tmp_path / "s.h5"), stage=stage,
           dtype="uint16", block_rows=3)
    follow(stage, "com", str(tmp_path / "one.h5"), until_complete=True)
    with jobqueue.SLURMCluster(cores=1, processes=1, memory="1GB", walltime="00:10:00", queue="debug",
                               log_directory=str(tmp_path / "logs"), job_directives_skip=["--mem"],
                               scheduler_options={"dashboard_address": None}) as cluster, \
            distributed.Client(cluster) as client:
        cluster.scale(jobs=2)
        client.wait_for_workers(2, timeout=180)
        r = follow(stage, "com", str(tmp_path / "dask.h5"), until_complete=True, scheduler=client)
        assert r.complete and r.blocks_processed == 8
        assert len(client.scheduler_info()["workers"]) == 2
    a, b = emd.read(str(tmp_path / "one.h5")), emd.read(str(tmp_path / "dask.h5"))
    for name in ("values", "reason", "map"):
        np.testing.assert_array_equal(a[name], b[name])
