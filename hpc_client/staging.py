"""Staging: input files into a job directory, outputs back out, SHA-256 checked on both sides.

Every job gets its own directory ``<root>/<idempotency key>/`` holding the staged inputs
(by base name), the job's own outputs, and a ``.emedge/`` folder::

    .emedge/job.sh          the job body (script, or the command as a script)
    .emedge/wrapper.sh      what the scheduler runs: cd, check inputs, run job.sh, checksum outputs
    .emedge/inputs.sha256   checksums taken here before upload, checked on the node (sha256sum -c)
    .emedge/outputs.sha256  checksums taken on the node after the job, checked here after download
    .emedge/stdout, stderr  the job's output streams
    .emedge/exit_code       the wrapper's exit status (97: a staged input failed its checksum)

A :class:`Stager` moves bytes between this machine and that directory: a shared directory
(the NAS case; local and Slurm backends) or the Superfacility API's upload/download.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import shutil
import typing

from hpc_client.errors import StagingError
from hpc_client.job import JobSpec

META = ".emedge"
TAIL_BYTES = 4096


class Stager(typing.Protocol):
    """Moves files between this machine and the job directories under ``node_root``."""

    node_root: str

    def put_bytes(self, rel: str, data: bytes) -> None: ...

    def put_file(self, local: str, rel: str) -> None: ...

    def get_file(self, rel: str, local: str) -> None: ...

    def read_bytes(self, rel: str, tail: typing.Optional[int] = None) -> typing.Optional[bytes]: ...


class SharedDirStager:
    """Job directories in a directory both sides see: ``local_root`` here, ``node_root`` on the
    nodes (the same path unless the NAS is mounted elsewhere there)."""

    def __init__(self, local_root: str, node_root: typing.Optional[str] = None) -> None:
        self.local_root = os.path.abspath(os.path.expanduser(local_root))
        self.node_root = node_root or self.local_root

    def path(self, rel: str) -> str:
        return os.path.join(self.local_root, rel)

    def put_bytes(self, rel: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(self.path(rel)), exist_ok=True)
        with open(self.path(rel), "wb") as fp:
            fp.write(data)

    def put_file(self, local: str, rel: str) -> None:
        os.makedirs(os.path.dirname(self.path(rel)), exist_ok=True)
        shutil.copyfile(local, self.path(rel))

    def get_file(self, rel: str, local: str) -> None:
        try:
            shutil.copyfile(self.path(rel), local)
        except FileNotFoundError:
            raise StagingError(f"{rel} is not in the staging directory {self.local_root}") from None

    def read_bytes(self, rel: str, tail: typing.Optional[int] = None) -> typing.Optional[bytes]:
        try:
            with open(self.path(rel), "rb") as fp:
                if tail is not None:
                    fp.seek(max(0, os.fstat(fp.fileno()).st_size - tail))
                return fp.read()
        except FileNotFoundError:
            return None


@dataclasses.dataclass(frozen=True)
class StagedJob:
    """Where a staged job lives: ``rel`` under the stager's root; paths as the node sees them."""

    rel: str
    node_dir: str
    wrapper: str
    stdout: str
    stderr: str


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wrapper_script(node_dir: str, stage_out: typing.Sequence[str], header: typing.Sequence[str] = ()) -> str:
    """The script the scheduler runs. Exit 97: a staged input failed its checksum on the node."""
    d = shlex.quote(node_dir)
    outs = " ".join(shlex.quote(o) for o in stage_out)
    checksum_outputs = (f"for f in {outs}; do [ -f \"$f\" ] && sha256sum -- \"$f\"; done > {META}/outputs.sha256"
                        if stage_out else f": > {META}/outputs.sha256")
    lines = ["#!/bin/bash", *header,
             "# emedge job wrapper: check the staged inputs, run the job, checksum its outputs",
             f"cd {d} || exit 96",
             f"trap 'echo $? > {META}/exit_code' EXIT",
             f"if [ -s {META}/inputs.sha256 ] && ! sha256sum --quiet --strict -c {META}/inputs.sha256 >&2; then",
             "  echo 'emedge: a staged input does not match its checksum' >&2; exit 97",
             "fi",
             f"chmod +x {META}/job.sh",
             f"./{META}/job.sh",
             "rc=$?",
             checksum_outputs,
             "exit $rc", ""]
    return "\n".join(lines)


def stage(stager: Stager, spec: JobSpec,
          header: typing.Callable[[str], typing.Sequence[str]] = lambda node_dir: ()) -> StagedJob:
    """Copy ``spec``'s inputs, its script and the wrapper into a fresh job directory;
    ``header(node_dir)`` gives lines for the top of the wrapper (e.g. ``#SBATCH`` directives)."""
    rel = spec.idempotency_key
    node_dir = f"{stager.node_root.rstrip('/')}/{rel}"
    sums = []
    for src in spec.stage_in:
        if not os.path.isfile(src):
            raise StagingError(f"stage-in file {src} does not exist")
        name = os.path.basename(src)
        sums.append(f"{sha256_file(src)}  {name}\n")
        stager.put_file(src, f"{rel}/{name}")
    stager.put_bytes(f"{rel}/{META}/inputs.sha256", "".join(sums).encode())
    stager.put_bytes(f"{rel}/{META}/job.sh", spec.script_text().encode())
    stdout, stderr = f"{node_dir}/{META}/stdout", f"{node_dir}/{META}/stderr"
    text = wrapper_script(node_dir, spec.stage_out, header(node_dir))
    stager.put_bytes(f"{rel}/{META}/wrapper.sh", text.encode())
    return StagedJob(rel=rel, node_dir=node_dir, wrapper=text, stdout=stdout, stderr=stderr)


def tails(stager: Stager, rel: str) -> tuple[str, str]:
    """The last few kB of the job's stdout and stderr ("" where there is none yet)."""
    out = [stager.read_bytes(f"{rel}/{META}/{name}", tail=TAIL_BYTES) or b"" for name in ("stdout", "stderr")]
    return out[0].decode(errors="replace"), out[1].decode(errors="replace")


def output_sums(stager: Stager, rel: str) -> dict[str, str]:
    """``{name: sha256}`` of the outputs the job produced (empty until it has finished)."""
    text = (stager.read_bytes(f"{rel}/{META}/outputs.sha256") or b"").decode()
    sums = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if name:
            sums[name] = digest
    return sums


def fetch(stager: Stager, rel: str, dest: str) -> list[str]:
    """Copy the job's outputs into ``dest`` and check each against the node's checksum."""
    sums = output_sums(stager, rel)
    os.makedirs(dest, exist_ok=True)
    paths = []
    for name, digest in sums.items():
        local = os.path.join(dest, name)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        stager.get_file(f"{rel}/{name}", local + ".part")
        got = sha256_file(local + ".part")
        if got != digest:
            os.unlink(local + ".part")
            raise StagingError(f"{name}: checksum {got[:12]}... differs from the node's {digest[:12]}...")
        os.replace(local + ".part", local)
        paths.append(local)
    return paths
