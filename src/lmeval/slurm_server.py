"""Servers as Slurm jobs (`--launcher slurm`): each server is one job on one node with
`--gres=gpu:TP`, named `lmeval-<run id>-<role>`.

lmeval's side (`SlurmServer`) writes what the job needs into the run folder, which the nodes
share: the settings (`servers/jobs/ROLE.json`), the key (`servers/ROLE.key`, 0600, never on
the sbatch command line) and the batch script. The job runs lmeval's own entry point
(`lmeval slurm-job SETTINGS`, `serve_in_job` below), not bare lmdeploy: it takes its GPUs from
CUDA_VISIBLE_DEVICES as Slurm set it, listens on its node's address (Slurm's NodeAddr, never
0.0.0.0) on a port it picks there, writes where it listens (`servers/jobs/ROLE.address.json`), and
on SIGTERM stops the server's whole tree (Slurm's process tracking misses workers that ignore
SIGTERM or sit in sessions of their own). lmeval watches the job's state through squeue, so a
job that fails, is cancelled, runs out of time or loses its node is noticed within a second,
and cancels it with scancel, waiting until the queue no longer holds it.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, SecretStr

from lmeval import signals, slurm
from lmeval.exceptions import ServerFailed, StageFailed, UsageError
from lmeval.files import log_tail, write_private
from lmeval.launch import LOG_TAIL_LINES, ServerGroup, ServerSpec, ServerState, StopReport, free_port, replica_capacity
from lmeval.processes import Stopped, owner_token, tagged_env

STATE_SECONDS = 0.5  # how fresh a job's state must be; squeue is asked at most this often
CANCEL_WAIT_SECONDS = 30.0  # after scancel's own KillWait, how long lmeval waits for the job to go
FINAL_STATE_SECONDS = 8.0  # how long an ending job (COMPLETING) may take to get its final state
JOB_COMMENT = "lmeval"  # the start of every job's comment: `lmeval TAG OWNER`


def owner_here() -> str:
    """This lmeval as a job's comment names it: host, pid and start time."""
    return f"{socket.gethostname()}/{owner_token()}"


@dataclass(frozen=True)
class SlurmPlacement:
    """Where a role's servers run: jobs in PARTITION with the user's extra sbatch flags."""

    partition: str | None
    sbatch_args: tuple[str, ...] = ()
    proxy: bool = True  # run/infer/judge: OpenCompass talks to a proxy here, which lmeval points at the jobs

    def server(self, spec: ServerSpec, group: ServerGroup) -> SlurmServer:
        return SlurmServer(spec, group.lmdeploy, group.folder, group.report, self, group.run_id, group.grace)


def parse_slurm_args(text: str, option: str = "--slurm-args") -> tuple[str, ...]:
    """Split the user's extra sbatch flags, refusing those lmeval sets itself."""
    try:
        args = tuple(shlex.split(text))
    except ValueError as error:
        raise UsageError(f"{option}: cannot split {text!r}: {error}") from None
    owned = {"--job-name": "lmeval names each job", "-J": "lmeval names each job",
             "--output": "the job logs to the run folder", "-o": "the job logs to the run folder",
             "--gres": "use --tp", "--partition": "use --partition", "-p": "use --partition",
             "--comment": "lmeval tags each job with it", "--parsable": "lmeval reads the job id"}
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in owned:
            raise UsageError(f"{option} must not set {flag}: {owned[flag]}")
    return args


class JobSettings(BaseModel):
    """What the job reads from the run folder: the server to start, without its key."""

    role: str
    model: str
    served_name: str
    tp: int
    port: int  # 0: pick a free one on the node
    extra_args: tuple[str, ...]
    lmdeploy: str
    key_file: str
    address_file: str
    run_id: str
    grace: float


class JobAddress(BaseModel):
    """What the job writes once its server process started: where it listens, on which GPUs."""

    job_id: str
    node: str
    host: str
    port: int
    gpus: list[int]
    gpu_name: str | None = None  # for the server's default --max-batch-size


class SlurmServer:
    """One LMDeploy api_server in a Slurm job, as lmeval sees it from the submitting host."""

    def __init__(self, spec: ServerSpec, lmdeploy: Path, folder: Path, report: StopReport,
                 placement: SlurmPlacement, run_id: str, grace: float) -> None:
        self.spec = spec
        self.lmdeploy = lmdeploy
        self.folder = folder
        self.report = report
        self.placement = placement
        self.run_id = run_id
        self.grace = grace
        role, jobs = spec.role, folder / "jobs"  # jobs/: what the job reads and writes, apart from state files
        self.log_path = folder / f"{role}.log"
        self.state_path = folder / f"{role}.json"
        self.key_path = folder / f"{role}.key"
        self.settings_path = jobs / f"{role}.json"
        self.address_path = jobs / f"{role}.address.json"
        self.script_path = jobs / f"{role}.sbatch"
        self.job_name = f"lmeval-{run_id}-{role}" if run_id else f"lmeval-{folder.parent.name}-{role}"
        self.tag = f"{role}-job-{os.urandom(6).hex()}"
        self.job_id = ""
        self.registered_with = None  # the proxy lmeval registered it with, deregistered before it stops
        self._job: slurm.Job | None = None
        self._job_read = 0.0
        self._shown = ""  # the queue state last shown; "-" once stopping (no more notices)
        self._where: JobAddress | None = None

    # ------------------------------------------------------------ what it is

    @property
    def name(self) -> str:
        return f"{self.spec.role} server"

    def sbatch_options(self) -> list[str]:
        options = ["--job-name", self.job_name, "--comment", f"{JOB_COMMENT} {self.tag} {owner_here()}",
                   "--nodes", "1", "--ntasks", "1", f"--gres=gpu:{self.spec.tp}",
                   "--output", str(self.log_path), "--open-mode", "append"]
        if self.placement.partition:
            options += ["--partition", self.placement.partition]
        return options + list(self.placement.sbatch_args)

    @property
    def command(self) -> str:
        """How it was submitted (nothing secret in it: the key is in a file)."""
        return shlex.join(["sbatch", *self.sbatch_options(), str(self.script_path)])

    @property
    def node(self) -> str:
        return self._where.node if self._where else ""

    @property
    def gpus(self) -> tuple[int, ...]:
        return tuple(self._where.gpus) if self._where else ()

    @property
    def address(self) -> tuple[str, int] | None:
        where = self._read_address()
        return (where.host, where.port) if where else None

    @property
    def url(self) -> str:
        address = self.address
        if address is None:
            return ""
        host, port = address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def started_text(self) -> str:
        where = f"partition {self.placement.partition}" if self.placement.partition else "the default partition"
        return f"submitted {self.name} as Slurm job {self.job_id} ({where}, gpu:{self.spec.tp}): {self.command}"

    def capacity(self) -> int:
        return replica_capacity(self.spec, self._where.gpu_name if self._where else None)

    # ------------------------------------------------------------ start and watch

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(self.key_path, self.spec.api_key.get_secret_value() + "\n")
        self.address_path.unlink(missing_ok=True)  # a run reopened with --reuse: not this job's
        write_private(self.settings_path, JobSettings(
            role=self.spec.role, model=self.spec.model, served_name=self.spec.served_name, tp=self.spec.tp,
            port=self.spec.port, extra_args=self.spec.extra_args, lmdeploy=str(self.lmdeploy),
            key_file=str(self.key_path), address_file=str(self.address_path), run_id=self.run_id,
            grace=self.grace).model_dump_json(indent=2))
        write_private(self.script_path, "#!/bin/sh\n# lmeval's entry point, run by Slurm on the node\n"
                      f"exec {shlex.quote(sys.executable)} -m lmeval slurm-job {shlex.quote(str(self.settings_path))}\n")
        env = tagged_env(dict(os.environ), self.tag, owner_token(), self.run_id)
        self.save_state(stopped=False)  # before sbatch: `lmeval cleanup` finds the job by its tag
        self.job_id = slurm.submit(self.script_path, self.sbatch_options(), env, f"the {self.name}")
        self.save_state(stopped=False)

    def save_state(self, stopped: bool) -> None:
        address = self.address
        ServerState(role=self.spec.role, pid=None, created=0.0, tag=self.tag, owner=owner_token(),
                    host=address[0] if address else "", port=address[1] if address else 0, url=self.url,
                    gpus=list(self.gpus), log=str(self.log_path), command=self.command, stopped=stopped,
                    launcher="slurm", job_id=self.job_id).save(self.state_path)

    def job(self) -> slurm.Job | None:
        """The job as squeue shows it now (at most STATE_SECONDS old); each change of its queue
        state is shown to the user."""
        now = time.monotonic()
        if self.job_id and now - self._job_read >= STATE_SECONDS:
            self._job = slurm.jobs([self.job_id]).get(self.job_id)
            self._job_read = now
            shown = self._job.describe() if self._job else "gone from the queue"
            if shown != self._shown and self._shown != "-":
                self._shown = shown
                self.report.info(f"{self.name}: Slurm job {self.job_id} {shown}")
        return self._job

    def _read_address(self) -> JobAddress | None:
        if self._where is None and self.address_path.exists():
            try:
                where = JobAddress.model_validate_json(self.address_path.read_bytes())
            except (OSError, ValueError):
                return None  # written atomically: a failed read is a file of another job
            if where.job_id == self.job_id:
                self._where = where
        return self._where

    def exit_status(self) -> str | None:
        """How the job ended (`ended: Slurm job 12 CANCELLED`), or None while it is queued or
        runs. A job that is ending (COMPLETING: its processes are being stopped) is given a few
        seconds for Slurm's verdict: cancelled, failed, out of time, its node lost."""
        job = self.job()
        if job is not None and job.state == "COMPLETING":
            signals.wait(lambda: (self.job() or job).state != "COMPLETING", FINAL_STATE_SECONDS,
                         lambda: f"Slurm's verdict on job {self.job_id} of the {self.name}", poll=STATE_SECONDS)
            job = self.job()
        if job is None:
            return f"ended: Slurm job {self.job_id} is gone from the queue"
        if job.finished or job.state == "COMPLETING":
            return f"ended: Slurm job {self.job_id} {job.describe()}"
        return None

    def check_alive(self) -> None:
        status = self.exit_status()
        if status is not None:
            raise self.failure(status)

    def owns_port(self) -> bool:
        """The job wrote this address; the fresh key it alone holds proves the rest."""
        return True

    def failure(self, what: str) -> ServerFailed:
        detail = (f"log {self.log_path}, last lines:\n{log_tail(self.log_path, LOG_TAIL_LINES)}\n"
                  f"submitted with: {self.command}")
        return ServerFailed(f"{self.name} {what}; see {self.log_path}", detail)

    # ------------------------------------------------------------ stop

    def stop(self, grace: float = 10.0) -> Stopped:
        """Take it out of the proxy, then cancel the job (a pending one too)."""
        from lmeval.readiness import deregister

        if self.registered_with is not None:
            deregister(self.registered_with, self)
        self._shown = "-"
        return cancel_jobs([self.job_id], f"the {self.name}", grace)


def cancel_jobs(job_ids: list[str], what: str, grace: float) -> Stopped:
    """scancel JOB_IDS and wait until the queue no longer holds them: Slurm sends SIGTERM, and
    SIGKILL after its KillWait; the job's entry point stops its server's whole tree meanwhile."""
    ids = [job_id for job_id in job_ids if job_id]
    if not ids:
        return Stopped(ended=0, summary="no job submitted")
    with signals.shielded():
        slurm.cancel(ids)
        active: dict[str, slurm.Job] = {}

        def gone() -> bool:
            active.clear()
            active.update({job_id: job for job_id, job in slurm.jobs(ids).items() if not job.finished})
            return not active

        signals.wait(gone, grace + CANCEL_WAIT_SECONDS, lambda: f"{what} to leave the queue (Slurm job(s) "
                     f"{', '.join(f'{job.job_id} {job.state}' for job in active.values())})", poll=STATE_SECONDS)
    names = ", ".join(ids)
    return Stopped(ended=len(ids) - len(active), summary=f"Slurm job {names} cancelled",
                   left=tuple(f"Slurm job {job.job_id} ({job.state})" for job in active.values()))


def jobs_tagged(tag: str) -> list[str]:
    """This user's jobs whose comment carries TAG (a job lmeval submitted, whose id it may not
    have kept)."""
    return [job.job_id for job in slurm.my_jobs() if job.comment.startswith(JOB_COMMENT) and tag in job.comment.split()]


# ---------------------------------------------------------------- inside the job


def _visible_gpus() -> list[int]:
    text = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise StageFailed(f"CUDA_VISIBLE_DEVICES={text!r} as Slurm set it is not a list of GPU ids") from None


def _gpu_name(gpus: list[int]) -> str | None:
    from lmeval import gpus as gpu_inventory

    inventory = gpu_inventory.inventory()
    names = {gpu.index: gpu.name for gpu in inventory or []}
    return names.get(gpus[0]) if gpus else None


def serve_in_job(app, settings_path: Path) -> int:
    """`lmeval slurm-job SETTINGS`, as Slurm runs it on the node: start the server as lmeval does
    here, say where it listens, and hold until it ends or the job is cancelled (SIGTERM), then
    stop its whole tree."""
    try:
        settings = JobSettings.model_validate_json(settings_path.read_bytes())
        key = SecretStr(Path(settings.key_file).read_text().strip())
    except OSError as error:
        raise StageFailed(f"the job cannot read {error.filename or settings_path} ({error.strerror}): the work "
                          "dir must be on a file system the nodes share") from None
    node = os.environ.get("SLURMD_NODENAME", "")
    job_id = os.environ.get("SLURM_JOB_ID", "")
    if not node or not job_id:
        raise UsageError("lmeval slurm-job runs inside a Slurm job (SLURMD_NODENAME and SLURM_JOB_ID unset)")
    host = slurm.node_address(node)
    gpus = _visible_gpus()
    if len(gpus) < settings.tp:
        raise StageFailed(f"Slurm gave the job GPUs {gpus or 'none'}, but --tp {settings.tp} needs {settings.tp}")
    spec = ServerSpec(role=settings.role, model=settings.model, served_name=settings.served_name,
                      tp=settings.tp, host=host, port=settings.port or free_port(host), api_key=key,
                      gpus=tuple(gpus[:settings.tp]), extra_args=settings.extra_args)
    folder = Path(settings.key_file).parent  # the run's servers/: the server logs there as it does here
    with ServerGroup(Path(settings.lmdeploy), folder, app, settings.run_id, settings.grace,
                     state_files=False) as group:
        server = group.start(spec)
        write_private(Path(settings.address_file), JobAddress(
            job_id=job_id, node=node, host=host, port=spec.port, gpus=list(spec.gpus),
            gpu_name=_gpu_name(list(spec.gpus))).model_dump_json(indent=2))
        app.info(f"{server.name} of Slurm job {job_id} on {node} will listen at {server.url}")
        while server.exit_status() is None:
            time.sleep(STATE_SECONDS)
        server.check_alive()
    return 0
