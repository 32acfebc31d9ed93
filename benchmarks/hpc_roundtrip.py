"""Submit -> COMPLETED -> fetched latency of a trivial Slurm job: hpc_client vs raw requests.

Both talk to the same slurmrestd in the same run, alternating, after one warm-up job each:

- raw: one keep-alive ``requests.Session``, ``POST job/submit``, ``GET job/{id}`` every
  ``--poll`` s until COMPLETED, then read the output file;
- client: ``Client.submit`` (staging, checksums, registry, idempotency lookup) -> ``wait``
  polling at the same fixed interval -> ``fetch`` (checksum checked);
- client_backoff: the client with its default polling (0.2 s growing x1.5), for reference.

Needs the local Slurm: ``eval "$(bash scripts/start-slurm.sh)"``. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time

import requests

from hpc_client import Client, JobSpec, JobState, open_client
from hpc_client.registry import Registry

SCRIPT = "echo hello > out.txt\n"


def raw_round_trip(url: str, user: str, token: str, version: str, workdir: str, dest: str, poll: float,
                   http: requests.Session) -> float:
    t0 = time.perf_counter()
    body = {"script": "#!/bin/bash\n" + SCRIPT, "job": {
        "name": "raw-bench", "current_working_directory": workdir, "standard_output": f"{workdir}/stdout",
        "environment": {"PATH": "/usr/bin:/bin"}, "time_limit": 5}}
    job_id = http.post(f"{url}/slurm/{version}/job/submit", json=body, timeout=30).json()["job_id"]
    while True:
        state = http.get(f"{url}/slurm/{version}/job/{job_id}", timeout=30).json()["jobs"][0]["job_state"]
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            break
        time.sleep(poll)
    assert state == "COMPLETED", state
    with open(f"{workdir}/out.txt", "rb") as src, open(os.path.join(dest, "out.txt"), "wb") as dst:
        dst.write(src.read())
    return time.perf_counter() - t0


def client_round_trip(client: Client, dest: str) -> float:
    t0 = time.perf_counter()
    job = client.submit(JobSpec(script=SCRIPT, stage_out=["out.txt"], name="client-bench"))
    done = client.wait(job.id, timeout=120)
    assert done.state == JobState.COMPLETED, done
    client.fetch(job.id, dest)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5, help="round trips of each kind (default 5)")
    p.add_argument("--poll", type=float, default=0.1, help="poll interval of raw and client (default 0.1 s)")
    args = p.parse_args()
    env = {k: os.environ.get(k) for k in ("SLURM_REST_URL", "SLURM_REST_USER", "SLURM_REST_TOKEN")}
    if not all(env.values()):
        print('needs SLURM_REST_URL/USER/TOKEN: eval "$(bash scripts/start-slurm.sh)"', file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="hpc-bench-")
    registry = Registry(os.path.join(tmp, "registry.json"))
    client = open_client("slurmrest", registry=registry, staging_dir=os.path.join(tmp, "staging"))
    client.poll, client.max_poll, client.poll_factor = args.poll, args.poll, 1.0
    backoff = open_client("slurmrest", registry=registry, staging_dir=os.path.join(tmp, "staging"))
    version = client.backend.dialect.version  # type: ignore[attr-defined]  (slurmrest only)
    http = requests.Session()
    http.headers.update({"X-SLURM-USER-NAME": env["SLURM_REST_USER"] or "",
                         "X-SLURM-USER-TOKEN": env["SLURM_REST_TOKEN"] or ""})
    times: dict[str, list[float]] = {"raw": [], "client": [], "client_backoff": []}
    for i in range(args.n + 1):
        work = os.path.join(tmp, f"raw{i}")
        os.makedirs(work)
        runs = {"raw": functools.partial(raw_round_trip, env["SLURM_REST_URL"] or "", env["SLURM_REST_USER"] or "",
                                         env["SLURM_REST_TOKEN"] or "", version, work,
                                         os.path.join(tmp, f"rawback{i}"), args.poll, http),
                "client": functools.partial(client_round_trip, client, os.path.join(tmp, f"back{i}")),
                "client_backoff": functools.partial(client_round_trip, backoff, os.path.join(tmp, f"boback{i}"))}
        os.makedirs(os.path.join(tmp, f"rawback{i}"))
        for kind in (("raw", "client", "client_backoff") if i % 2 == 0 else ("client", "raw", "client_backoff")):
            t = runs[kind]()
            if i > 0:                                  # round 0 warms both up
                times[kind].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"benchmark": "hpc_roundtrip", "backend": "slurmrest", "api_version": version, "n": args.n,
                      "poll_s": args.poll, "raw_s_median": round(med["raw"], 3),
                      "client_s_median": round(med["client"], 3), "ratio": round(med["client"] / med["raw"], 3),
                      "goal_ratio": 1.2, "client_default_backoff_s_median": round(med["client_backoff"], 3),
                      "raw_s": [round(t, 3) for t in times["raw"]],
                      "client_s": [round(t, 3) for t in times["client"]]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
