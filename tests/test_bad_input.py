"""Every bad input is refused before any server starts: one line `lmeval: error: ...` on stderr,
exit 2, no traceback, nothing on stdout, no process left, the work dir (holding a run) exactly
as it was, and all of it in well under 15 s.

lmeval runs as a real subprocess. A fake `pynvml` on PYTHONPATH reports four free H200s, so
GPU ids are checked as on a GPU machine (and no "no NVIDIA driver" warning is printed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from scenarios import make_chain_scenario
from toolkit import MODELS, OPENCOMPASS, TOOLS, Runner, describe, lmeval_env, only_run, tree_digest

pytestmark = pytest.mark.processes

REFUSE_SECONDS = 15

FAKE_NVML = '''
class NVMLError(Exception):
    pass

class _Memory:
    used = 0

def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlDeviceGetCount(): return 4
def nvmlDeviceGetHandleByIndex(index): return index
def nvmlDeviceGetName(handle): return "NVIDIA H200"
def nvmlDeviceGetMemoryInfo(handle): return _Memory()
def nvmlDeviceGetComputeRunningProcesses(handle): return []
'''


class Context:
    """A work dir holding one run (made by `lmeval infer --dry-run`: manifest, no predictions)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        nvml = folder / "nvml"
        nvml.mkdir()
        (nvml / "pynvml.py").write_text(FAKE_NVML)
        self.env = lmeval_env(PYTHONPATH=str(nvml))
        self.scenario = make_chain_scenario(folder / "data")
        self.work = folder / "out"
        self.runner = Runner(folder)
        made = self.runner.run("infer", str(MODELS / "demo-chat"), "--dataset", str(self.scenario.qa),
                               "--gpus", "0", "-w", str(self.work), "--dry-run", *TOOLS, env=self.env,
                               work_dir=self.work)
        assert made.poll() == 0, made.transcript()
        self.run_id = only_run(self.work).name
        self.bad = folder / "data" / "broken.jsonl"
        self.bad.write_text('{"question": "a", "answer": "b"}\n{"question": "c", "answer": "d"}\n'
                            '{"question": "e" "answer": "f"}\n')
        self.file = folder / "a-file"
        self.file.write_text("not a folder")
        self.immutable = folder / "immutable"
        self.immutable.mkdir()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.taken_port = self.listener.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.closed_port = probe.getsockname()[1]  # nothing listens there

    def run_args(self, *extra: str, model: str | None = None) -> list[str]:
        return ["run", model or str(MODELS / "demo-chat"), "--dataset", str(self.scenario.qa), "--gpus", "0",
                "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "1", "--judge-tp", "1",
                "-w", str(self.work), *TOOLS, *extra]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    context = Context(tmp_path_factory.mktemp("bad-input"))
    yield context
    context.listener.close()
    context.runner.teardown()


# (id, arguments from the context, the error after "lmeval: error: ")
CASES = [
    ("unknown task", lambda c: c.run_args("--task", "nope"),
     lambda c: "unknown task 'nope'; --task takes one of: chat (see lmeval tasks)"),
    ("unknown dataset", lambda c: c.run_args("--task", "chat", "--datasets", "gpqa,nope"),
     lambda c: "unknown dataset 'nope' in --datasets; the chat suite has: aime2025, gpqa, ifeval, code, mmlu_pro, hle"),
    ("model path missing", lambda c: c.run_args(model=str(c.folder / "no-such-model")),
     lambda c: f"MODEL: model path {c.folder}/no-such-model does not exist; "
               "give a model folder or a hub id like org/name"),
    ("judge model path missing", lambda c: c.run_args("--judge-model", str(c.folder / "no-judge")),
     lambda c: f"--judge-model: model path {c.folder}/no-judge does not exist; "
               "give a model folder or a hub id like org/name"),
    ("malformed dataset", lambda c: c.run_args("--dataset", str(c.bad)),
     lambda c: f"{c.bad}:3: not valid JSON (Expecting ',' delimiter)"),
    ("dataset file missing", lambda c: c.run_args("--dataset", str(c.folder / "gone.jsonl")),
     lambda c: f"dataset file not found: {c.folder}/gone.jsonl"),
    ("tp larger than the GPUs given", lambda c: c.run_args("--tp", "2"),
     lambda c: "--gpus lists 1 GPU(s) but --tp 2 needs 2; list 2 GPUs or change --tp"),
    ("judge tp larger than its GPUs", lambda c: c.run_args("--judge-tp", "2"),
     lambda c: "--judge-gpus lists 1 GPU(s) but --judge-tp 2 needs 2; list 2 GPUs or change --judge-tp"),
    ("GPU listed twice", lambda c: c.run_args("--gpus", "1,1"),
     lambda c: "--gpus lists GPU 1 twice; give each GPU once"),
    ("GPU that does not exist", lambda c: c.run_args("--gpus", "0,7"),
     lambda c: "--gpus: GPU 7 does not exist; this machine has GPUs 0,1,2,3"),
    ("judge GPU that does not exist", lambda c: c.run_args("--judge-gpus", "9"),
     lambda c: "--judge-gpus: GPU 9 does not exist; this machine has GPUs 0,1,2,3"),
    ("GPU id not a number", lambda c: c.run_args("--gpus", "0,x"),
     lambda c: "--gpus takes GPU indices separated by commas, like 0,1; got '0,x'"),
    ("port taken", lambda c: c.run_args("--port", str(c.taken_port)),
     lambda c: f"port {c.taken_port} on 127.0.0.1 is taken (Address already in use); "
               "pick another --port or leave it out"),
    ("judge port taken", lambda c: c.run_args("--judge-port", str(c.taken_port)),
     lambda c: f"port {c.taken_port} on 127.0.0.1 is taken (Address already in use); "
               "pick another --judge-port or leave it out"),
    ("reuse id absent", lambda c: c.run_args("--reuse", "20200101_000000"),
     lambda c: f"run 20200101_000000 does not exist in {c.work}; check the id or pass -w"),
    ("reuse id malformed", lambda c: c.run_args("--reuse", "../x"),
     lambda c: "run id '../x' is malformed; run ids look like 20250101_120000"),
    ("judge reuse id malformed", lambda c: ["judge", "--reuse", "../x", "-w", str(c.work), *TOOLS],
     lambda c: "run id '../x' is malformed; run ids look like 20250101_120000"),
    ("results of a malformed id", lambda c: ["results", "../x", "-w", str(c.work)],
     lambda c: "run id '../x' is malformed; run ids look like 20250101_120000"),
    ("judge a run with no predictions", lambda c: ["judge", "--reuse", c.run_id, "-w", str(c.work), *TOOLS],
     lambda c: f"run {c.run_id} has no predictions; run inference first (lmeval infer ... --reuse {c.run_id})"),
    ("results of a run with no scores", lambda c: ["results", c.run_id, "-w", str(c.work)],
     lambda c: f"run {c.run_id} has no scores yet; evaluate it with `lmeval judge --reuse {c.run_id}`"),
    ("tracker unknown", lambda c: c.run_args("--log-to", "neptune"),
     lambda c: "--log-to neptune: lmeval logs to mlflow or wandb"),
    ("tracker for inference only", lambda c: ["infer", str(MODELS / "demo-chat"), "--dataset", str(c.scenario.qa),
                                              "--gpus", "0", "-w", str(c.work), *TOOLS, "--log-to", "mlflow"],
     lambda c: "--log-to logs scores, which `lmeval infer` does not make; give it to `lmeval judge --reuse RUN`, "
               "or log the run once judged with `lmeval log RUN --to TRACKER`"),
    ("tracker run without a tracker", lambda c: c.run_args("--log-group", "weekly"),
     lambda c: "--log-group names the tracker run of --log-to; give --log-to too"),
    ("one step for a sweep", lambda c: c.run_args(str(MODELS / "demo-judge"), "--step", "100"),
     lambda c: "--step goes with one model; a sweep reads each checkpoint's step from its folder's name"),
    ("one step for several runs logged", lambda c: ["log", c.run_id, c.run_id, "--to", "mlflow", "--step", "3",
                                                     "-w", str(c.work)],
     lambda c: "--step goes with one run; several take each its own step"),
    ("logging a run with no scores", lambda c: ["log", c.run_id, "--to", "wandb", "-w", str(c.work)],
     lambda c: f"run {c.run_id} has no scores yet; evaluate it with `lmeval judge --reuse {c.run_id}`"),
    ("server URL invalid", lambda c: c.run_args("--api-server", "not-a-url"),
     lambda c: "--api-server 'not-a-url' is not a server URL like http://HOST:PORT"),
    ("server URL unreachable", lambda c: c.run_args("--api-server", f"http://127.0.0.1:{c.closed_port}"),
     lambda c: f"cannot reach --api-server http://127.0.0.1:{c.closed_port} (ConnectError); "
               "check the URL and that it runs"),
    ("judge URL invalid", lambda c: c.run_args("--judger-server", "ftp://judge"),
     lambda c: "--judger-server 'ftp://judge' is not a server URL like http://HOST:PORT"),
    ("judge URL unreachable", lambda c: c.run_args("--judger-server", f"http://127.0.0.1:{c.closed_port}/v1"),
     lambda c: f"cannot reach --judger-server http://127.0.0.1:{c.closed_port} (ConnectError); "
               "check the URL and that it runs"),
    ("lmdeploy missing", lambda c: c.run_args("--lmdeploy", str(c.folder / "no-lmdeploy")),
     lambda c: f"lmdeploy executable not found or not executable: {c.folder}/no-lmdeploy; "
               "run `lmeval setup`, or pass --lmdeploy PATH or set LMEVAL_LMDEPLOY"),
    ("lmdeploy not executable", lambda c: c.run_args("--lmdeploy", str(c.bad)),
     lambda c: f"lmdeploy executable not found or not executable: {c.bad}; "
               "run `lmeval setup`, or pass --lmdeploy PATH or set LMEVAL_LMDEPLOY"),
    ("opencompass missing", lambda c: c.run_args("--opencompass", str(c.folder / "no-opencompass")),
     lambda c: f"opencompass executable not found or not executable: {c.folder}/no-opencompass; "
               "run `lmeval setup`, or pass --opencompass PATH or set LMEVAL_OPENCOMPASS"),
    ("work dir is a file", lambda c: c.run_args("-w", str(c.file)),
     lambda c: f"work dir {c.file} is not a folder; pick another -w"),
    ("work dir under a file", lambda c: c.run_args("-w", str(c.file / "out")),
     lambda c: f"cannot create work dir {c.file}/out: Not a directory; pick another -w"),
    ("extra body not JSON", lambda c: c.run_args("--extra-body", "{chat_template_kwargs: 1}"),
     lambda c: "--extra-body is not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); "
               """give a JSON object, like '{"chat_template_kwargs": {"enable_thinking": true}}'"""),
    ("extra body not an object", lambda c: c.run_args("--extra-body", "[1, 2]"),
     lambda c: """--extra-body must be a JSON object, like '{"chat_template_kwargs": {"enable_thinking": true}}'; """
               "got a list"),
    ("extra body and an option set one thing", lambda c: c.run_args("--top-k", "5", "--extra-body", '{"top_k": 6}'),
     lambda c: "--extra-body sets top_k and so does --top-k; give it once"),
    ("top-p out of range", lambda c: c.run_args("--top-p", "1.5"),
     lambda c: "bad generation setting: --top-p Input should be less than or equal to 1"),
    ("judger key file missing", lambda c: c.run_args("--judger-server", "http://127.0.0.1:9",
                                                     "--judger-key-file", str(c.folder / "no-key")),
     lambda c: f"--judger-key-file {c.folder}/no-key: cannot read it (No such file or directory)"),
    ("partition without slurm", lambda c: c.run_args("--partition", "gpu"),
     lambda c: "--partition goes with --launcher slurm"),
    ("redo without reuse", lambda c: c.run_args("--redo"),
     lambda c: "--redo goes with lmeval run/infer --reuse RUN: it redoes that run's inference"),
]


def _refused(ctx: Context, args: list[str], env: dict[str, str] | None = None):
    before = tree_digest(ctx.work)
    started = time.monotonic()
    lm = ctx.runner.run(*args, env=env or ctx.env, work_dir=ctx.work)
    took = time.monotonic() - started
    return lm, took, before


def _assert_refused(ctx: Context, lm, took: float, before: dict, message: str) -> None:
    assert lm.poll() == 2, lm.transcript()
    assert lm.stderr == f"lmeval: error: {message}\n", lm.transcript()
    assert lm.stdout == ""
    assert took < REFUSE_SECONDS
    assert describe(ctx.runner.leftovers()) == ""
    assert tree_digest(ctx.work) == before  # no run folder made, none changed


@pytest.mark.parametrize("args, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_refused_before_anything_starts(args, message, ctx):
    lm, took, before = _refused(ctx, args(ctx))
    _assert_refused(ctx, lm, took, before, message(ctx))


def test_executables_missing_from_path_and_environment(ctx):
    env = dict(ctx.env, PATH=str(ctx.folder / "empty-bin"), LMEVAL_HOME=str(ctx.folder / "no-setup"))
    args = ["run", str(MODELS / "demo-chat"), "--dataset", str(ctx.scenario.qa), "-w", str(ctx.work)]
    lm, took, before = _refused(ctx, args, env)
    _assert_refused(ctx, lm, took, before, "opencompass executable not found or not executable: opencompass; "
                    "run `lmeval setup`, or pass --opencompass PATH or set LMEVAL_OPENCOMPASS")
    lm, took, before = _refused(ctx, [*args, "--opencompass", str(OPENCOMPASS)], env)
    _assert_refused(ctx, lm, took, before, "lmdeploy executable not found or not executable: lmdeploy; "
                    "run `lmeval setup`, or pass --lmdeploy PATH or set LMEVAL_LMDEPLOY")


def test_unwritable_work_dir(ctx):
    folder = ctx.immutable
    if os.geteuid() == 0:  # root writes through permission bits: make the folder immutable
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("running as root where chattr +i is not available")
        reason = "Operation not permitted"
    else:
        folder.chmod(0o500)
        reason = "Permission denied"
    try:
        lm, took, before = _refused(ctx, ctx.run_args("-w", str(folder)))
        _assert_refused(ctx, lm, took, before, f"work dir {folder} is not writable ({reason}); pick another -w")
        assert list(folder.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        else:
            folder.chmod(0o700)


def test_the_run_made_by_dry_run_is_intact(ctx):
    """After every refusal above, the run still is what the dry run made."""
    run = ctx.work / ctx.run_id
    manifest = json.loads((run / "lmeval.json").read_text())
    assert manifest["stages"] == {"dry-run": {"status": "ok", "started": None, "ended": None, "seconds": None,
                                              "opencompass_seconds": None, "message": ""}}
    assert not (run / "servers").exists() and not (run / "predictions").exists()
