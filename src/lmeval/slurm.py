"""The client of Slurm: the commands Slurm ships (`sbatch --parsable`, `squeue` with a fixed
format, `scancel`, `scontrol`, `sinfo`), run with the caller's environment (SLURM_CONF
included), each failure one clear error.

Why not submitit: it submits pickled Python callables and reads job states through `sacct`,
which needs Slurm's accounting daemon (many clusters, and the test cluster, have none); lmeval's
jobs are long-lived servers watched through `squeue`. pyslurm ties lmeval to one Slurm version.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lmeval.exceptions import StageFailed, UsageError

COMMAND_SECONDS = 60.0
# States of a job that is over; any other state (PENDING, RUNNING, COMPLETING, ...) is not.
FINISHED = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                      "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED"})
# File systems the nodes of a cluster share (the types /proc/mounts names).
SHARED_FILE_SYSTEMS = frozenset({"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "ceph", "glusterfs",
                                 "fuse.glusterfs", "fuse.ceph", "fuse.beegfs", "panfs", "wekafs", "cifs", "smb3",
                                 "9p", "virtiofs", "fuse.sshfs", "pvfs2", "orangefs", "afs"})


@dataclass(frozen=True)
class Job:
    """One job as squeue shows it."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, CANCELLED, ...
    reason: str  # why it pends or ended ("Resources", "None")
    node: str  # where it runs ("" while pending)
    name: str = ""
    comment: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def describe(self) -> str:
        """`pending (Resources)`, `running on n2`, `CANCELLED`, `FAILED (NonZeroExitCode)`; no
        reason where Slurm gives none (`None`: a job the scheduler has not looked at yet)."""
        if self.state == "RUNNING":
            return f"running on {self.node}"
        why = f" ({self.reason})" if self.reason and self.reason != "None" else ""
        return f"{'pending' if self.state == 'PENDING' else self.state}{why}"


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run a Slurm command and return its stdout; its own error line as a StageFailed otherwise."""
    if shutil.which(argv[0]) is None:
        raise UsageError(f"{argv[0]} not found: --launcher slurm needs Slurm's commands on PATH "
                         "(and SLURM_CONF set where the cluster needs it)")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_SECONDS, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise StageFailed(f"{argv[0]} did not answer within {COMMAND_SECONDS:g} s while {what}; "
                          "is the Slurm controller up?") from None
    if done.returncode != 0:
        error = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[-1]
        raise StageFailed(f"{argv[0]} failed while {what}: {error}")
    return done.stdout


def submit(script: Path, options: list[str], env: dict[str, str], what: str) -> str:
    """sbatch SCRIPT with OPTIONS (nothing secret: the job reads its key from a file) and ENV
    as the job's environment; the job id."""
    out = _run(["sbatch", "--parsable", *options, str(script)], f"submitting {what}", env)
    return out.strip().split(";")[0]  # "ID" or "ID;cluster"


_FORMAT = "%i|%T|%r|%N|%j|%k"


def _jobs(lines: str) -> list[Job]:
    found = []
    for line in lines.splitlines():
        parts = line.split("|", 5)
        if len(parts) == 6:
            job_id, state, reason, node, name, comment = (part.strip() for part in parts)
            found.append(Job(job_id, state, reason, node, name, "" if comment == "(null)" else comment))
    return found


def jobs(job_ids: Iterable[str]) -> dict[str, Job]:
    """The jobs JOB_IDS that squeue still knows, in any state; a finished job drops out of it
    after the cluster's MinJobAge."""
    ids = [job_id for job_id in job_ids if job_id]
    if not ids:
        return {}
    out = _run(["squeue", "--noheader", "--states", "all", "--jobs", ",".join(ids), "--format", _FORMAT],
               "reading job states")
    return {job.job_id: job for job in _jobs(out)}


def my_jobs() -> list[Job]:
    """Every job of this user that squeue knows."""
    out = _run(["squeue", "--noheader", "--states", "all", "--user", str(os.getuid()), "--format", _FORMAT],
               "listing your jobs")
    return _jobs(out)


def cancel(job_ids: Iterable[str]) -> None:
    ids = [job_id for job_id in job_ids if job_id]
    if ids:
        _run(["scancel", *ids], f"cancelling job(s) {', '.join(ids)}")


def node_address(node: str) -> str:
    """The address Slurm reaches NODE at (its NodeAddr): where a server on it must listen."""
    out = _run(["scontrol", "show", "node", "--oneliner", node], f"reading the address of node {node}")
    for field in out.split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1]
    raise StageFailed(f"scontrol shows no NodeAddr for node {node}")


def partition_hosts(partition: str | None) -> set[str]:
    """The host names of the nodes of PARTITION (the default partition when None)."""
    argv = ["sinfo", "--noheader", "--Node", "--format", "%n"]
    if partition:
        argv += ["--partition", partition]
    return {line.strip() for line in _run(argv, "listing the nodes of the partition").splitlines() if line.strip()}


def file_system_type(path: Path) -> str:
    """The type /proc/mounts gives the file system holding PATH (longest mount point)."""
    best, kind = "", "unknown"
    target = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def shared_problem(work_dir: Path, fs_type: str, hosts: set[str], here: str) -> str | None:
    """Why the nodes (on HOSTS) may not see WORK_DIR on a file system of FS_TYPE from this host
    HERE, or None: a network file system, or every node on this very host."""
    if fs_type in SHARED_FILE_SYSTEMS or fs_type.startswith("fuse."):
        return None
    others = sorted(host for host in hosts if host.split(".")[0] != here.split(".")[0])
    if not others:
        return None
    return (f"work dir {work_dir} is on {fs_type}, local to this host, but the jobs run on "
            f"{', '.join(others[:3])}{' ...' if len(others) > 3 else ''}: pass -w on a file system the nodes "
            "share (NFS, Lustre, GPFS, ...)")


def check_shared(work_dir: Path, partitions: Iterable[str | None]) -> None:
    """Refuse, before anything is submitted, a work dir the nodes cannot see: each job reads its
    settings there and writes where it listens there."""
    hosts = set().union(*(partition_hosts(partition) for partition in set(partitions)))
    problem = shared_problem(work_dir, file_system_type(work_dir), hosts, socket.gethostname())
    if problem:
        raise UsageError(problem)
