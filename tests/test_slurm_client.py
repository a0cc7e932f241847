"""The Slurm side without a cluster: squeue's lines read, job states told, the shared work dir
decided, sbatch flags checked, and the options that go with --launcher slurm refused where
they do not fit (through the real app)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmeval.cli import app
from lmeval.exceptions import UsageError
from lmeval.slurm import Job, _jobs, shared_problem
from lmeval.slurm_server import parse_slurm_args


def test_squeue_lines_become_jobs():
    lines = "12|PENDING|Resources||lmeval-20250101_120000-target-1|lmeval target-1-job-ab host/1:2.000\n" \
            "11|RUNNING|None|n1|lmeval-20250101_120000-target-0|(null)\nnot a job line\n"
    assert _jobs(lines) == [
        Job("12", "PENDING", "Resources", "", "lmeval-20250101_120000-target-1", "lmeval target-1-job-ab host/1:2.000"),
        Job("11", "RUNNING", "None", "n1", "lmeval-20250101_120000-target-0", ""),
    ]


@pytest.mark.parametrize("job, shown, finished", [
    (Job("1", "PENDING", "Resources", ""), "pending (Resources)", False),
    (Job("1", "PENDING", "None", ""), "pending", False),  # not yet looked at by the scheduler
    (Job("1", "RUNNING", "None", "n2"), "running on n2", False),
    (Job("1", "COMPLETING", "None", "n2"), "COMPLETING", False),
    (Job("1", "CANCELLED", "None", "n2"), "CANCELLED", True),
    (Job("1", "FAILED", "NonZeroExitCode", "n2"), "FAILED (NonZeroExitCode)", True),
    (Job("1", "TIMEOUT", "TimeLimit", "n2"), "TIMEOUT (TimeLimit)", True),
    (Job("1", "NODE_FAIL", "None", "n2"), "NODE_FAIL", True),
])
def test_job_states_in_words(job, shown, finished):
    assert (job.describe(), job.finished) == (shown, finished)


def test_a_local_work_dir_is_refused_only_when_jobs_run_on_other_hosts():
    work = Path("/scratch/out")
    assert shared_problem(work, "nfs4", {"gpu01", "gpu02"}, "login1") is None
    assert shared_problem(work, "lustre", {"gpu01"}, "login1") is None
    assert shared_problem(work, "ext4", {"login1"}, "login1.cluster") is None  # every node is this host
    assert shared_problem(work, "ext4", {"gpu01", "gpu02", "login1"}, "login1") == (
        "work dir /scratch/out is on ext4, local to this host, but the jobs run on gpu01, gpu02: pass -w on a file "
        "system the nodes share (NFS, Lustre, GPFS, ...)")


@pytest.mark.parametrize("text, message", [
    ("--gres=gpu:8", "--slurm-args must not set --gres: use --tp"),
    ("-p big", "--slurm-args must not set -p: use --partition"),
    ("--job-name x", "--slurm-args must not set --job-name: lmeval names each job"),
    ("--account 'a", "--slurm-args: cannot split \"--account 'a\": No closing quotation"),
])
def test_sbatch_flags_lmeval_sets_are_refused(text, message):
    with pytest.raises(UsageError) as caught:
        parse_slurm_args(text)
    assert caught.value.message == message


def test_sbatch_flags_pass_through():
    assert parse_slurm_args("--account a --qos=q --time 4:00:00 --constraint 'h200|h100'") == (
        "--account", "a", "--qos=q", "--time", "4:00:00", "--constraint", "h200|h100")


@pytest.mark.parametrize("extra, message", [
    (["--partition", "gpu"], "--partition goes with --launcher slurm"),
    (["--judge-partition", "gpu", "--slurm-args", "--qos q"], "--judge-partition and --slurm-args go with --launcher slurm"),
    (["--launcher", "slurm", "--gpus", "0"], "--gpus names GPUs of this machine; with --launcher slurm each server gets "
                                             "its GPUs from Slurm (--gres=gpu:TP on its node): leave --gpus out"),
    (["--launcher", "slurm", "--slurm-args", "--output x"], "--slurm-args must not set --output: the job logs to the "
                                                            "run folder"),
])
def test_options_that_do_not_go_together_are_refused(tmp_path, extra, message):
    model = tmp_path / "demo-model"
    model.mkdir()
    shown = CliRunner().invoke(app, ["infer", str(model), "--task", "chat", "--opencompass", "/bin/true",
                                     "--lmdeploy", "/bin/true", "-w", str(tmp_path / "out"), *extra])
    assert (shown.exit_code, shown.stderr) == (2, f"lmeval: error: {message}\n")
    assert not (tmp_path / "out").is_dir() or list((tmp_path / "out").iterdir()) == []  # no run made


def test_a_dry_run_shows_each_job_and_what_its_node_fills_in(tmp_path):
    model = tmp_path / "demo-model"
    model.mkdir()
    shown = CliRunner().invoke(app, ["infer", str(model), "--task", "chat", "--launcher", "slurm", "--partition", "gpu",
                                     "--replicas", "2", "--tp", "2", "--opencompass", "/bin/true", "--lmdeploy",
                                     "/bin/true", "-w", str(tmp_path / "out"), "--dry-run"])
    assert shown.exit_code == 0, shown.stderr
    jobs = [line for line in shown.stdout.splitlines() if "(a Slurm job" in line]
    assert jobs == [f"target-{i} server (a Slurm job in partition gpu, gpu:2): /bin/true serve api_server {model} "
                    "--server-name NODE_ADDRESS --server-port FREE_PORT --tp 2 --model-name demo-model --api-keys '***'"
                    for i in (0, 1)]
    assert [line.split(" (")[0] for line in shown.stdout.splitlines() if "server (" in line] == [
        "target-proxy server", "target-0 server", "target-1 server"]
