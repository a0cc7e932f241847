"""OpenCompass broken in the two ways a fresh install breaks it, with real lmeval and stand-in
servers: lmeval says what OpenCompass said, in one line, records the stage `failed`, and leaves
no process.

- An `opencompass` whose command dies at import (exit 1, the ImportError in its log): the stage
  fails, and its error line carries OpenCompass's exit code and last exception.
- A venv where OpenCompass cannot be imported at all (pyarrow wanting NumPy 2, as a venv made
  without `pyarrow<21`), or lacks what IFEval needs: the preflight finds it while a 60 s model
  loads and lmeval stops at once, long before the model is ready.
"""

from __future__ import annotations

import pytest
from scenarios import NUMPY_2, make_chain_scenario, unimportable_venv
from toolkit import MODELS, OPENCOMPASS, STANDIN, VENVS, only_run, read_json

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

REAL_PYTHON = VENVS / "opencompass" / "bin" / "python"


def dies_at_import(folder):
    """An `opencompass` command on the real venv's Python that raises as it starts."""
    script = folder / "bin" / "opencompass"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{REAL_PYTHON}\nraise ImportError({NUMPY_2!r})\n")
    script.chmod(0o755)
    return script


def infer(lmeval_runner, tmp_path, opencompass, **env):
    scenario = make_chain_scenario(tmp_path / "data")
    work_dir = tmp_path / "out"
    return work_dir, lmeval_runner.start(
        "infer", str(MODELS / "demo-chat"), "--dataset", str(scenario.mc), "--gpus", "0", "-w", str(work_dir),
        "--lmdeploy", str(STANDIN), "--opencompass", str(opencompass), env=lmeval_runner.env(**env), work_dir=work_dir)


def test_opencompass_failing_at_import_fails_the_stage_with_its_own_error(lmeval_runner, tmp_path):
    work_dir, lm = infer(lmeval_runner, tmp_path, dies_at_import(tmp_path / "broken"))
    assert lm.wait(120) == 1, lm.transcript()
    run_dir = only_run(work_dir)
    log = run_dir / "lmeval" / "opencompass_infer.log"
    message = (f"inference failed for choices: no predictions written (OpenCompass exited with code 1: "
               f"ImportError: {NUMPY_2}, in {log}); see the log below, then rerun the same command with "
               f"--reuse {run_dir.name}: only what is missing is inferred")
    assert lm.stderr_lines[-2:] == [f"lmeval: error: {message}",
                                    f"(OpenCompass wrote no task log under {run_dir}/logs/infer/demo-chat)"]
    assert "lmeval: stopped target server (1 processes ended)" in lm.stderr_lines
    assert lm.stdout == ""
    manifest = read_json(run_dir / "lmeval.json")
    assert (manifest["stages"]["infer"]["status"], manifest["stages"]["infer"]["message"]) == ("failed", message)
    assert read_json(run_dir / "servers" / "target.json")["stopped"] is True
    assert lmeval_runner.leftovers() == []


def test_an_opencompass_that_cannot_import_fails_before_the_model_has_loaded(lmeval_runner, tmp_path):
    work_dir, lm = infer(lmeval_runner, tmp_path, unimportable_venv(tmp_path / "venv"), STANDIN_LOAD_SECONDS="60")
    assert lm.wait(60) == 1, lm.transcript()
    took = lm.ended - lm.started
    assert took < 30, f"lmeval took {took:.1f} s to fail; the model loads for 60"
    run_dir = only_run(work_dir)
    message = (f"OpenCompass cannot run this evaluation: ImportError: {NUMPY_2} (found before any stage ran; see "
               f"{run_dir}/lmeval/preflight.log); fix OpenCompass's venv (`lmeval setup`) or the inputs, then rerun")
    assert lm.stderr_lines[-1] == f"lmeval: error: {message}", lm.transcript()
    assert "lmeval: stopped target server (1 processes ended)" in lm.stderr_lines
    manifest = read_json(run_dir / "lmeval.json")
    assert (manifest["stages"]["infer"]["status"], manifest["stages"]["infer"]["message"]) == ("failed", message)
    assert not (run_dir / "predictions").exists()
    assert lmeval_runner.leftovers() == []


def test_a_venv_without_what_ifeval_needs_fails_before_the_model_has_loaded(lmeval_runner, tmp_path):
    """OpenCompass's venv without langdetect (as a plain `pip install opencompass` has it): IFEval
    would crash in its evaluation, after the whole inference; the preflight says so at once."""
    from chat_suite import chat_args, write_suite

    suite = write_suite(tmp_path / "data", hle=False)
    venv = unimportable_venv(tmp_path / "venv", "langdetect", "No module named 'langdetect'")
    work_dir = tmp_path / "out"
    args = [str(venv) if arg == str(OPENCOMPASS) else arg
            for arg in chat_args(work_dir, "demo-chat", "--datasets", "ifeval")]
    lm = lmeval_runner.start("run", *args, env=lmeval_runner.env(**suite.env(), STANDIN_LOAD_SECONDS="60"),
                             work_dir=work_dir)
    assert lm.wait(60) == 1, lm.transcript()
    assert lm.ended - lm.started < 30, "the preflight did not fail before the model had loaded"
    run_dir = only_run(work_dir)
    assert lm.stderr_lines[-1] == (
        "lmeval: error: OpenCompass cannot run this evaluation: RuntimeError: OpenCompass's venv lacks langdetect, "
        "which the suite's evaluators need (ImportError: No module named 'langdetect'); run `lmeval setup` again: it "
        f"makes OpenCompass's venv with it (found before any stage ran; see {run_dir}/lmeval/preflight.log); fix "
        "OpenCompass's venv (`lmeval setup`) or the inputs, then rerun"), lm.transcript()
    assert lmeval_runner.leftovers() == []


# OpenCompass's eval task hangs as a task forked while another thread held a lock did (no CPU, no
# output, nothing asked of any server): a sitecustomize on its PYTHONPATH makes the eval task
# script (run as __main__, forked or not) sleep as it loads its config; the first time only when
# HANG_ONCE names a file to create, else every time.
HANG_HOOK = """
import os, sys, time

try:
    from mmengine.config import Config
except ImportError:  # a Python without OpenCompass (lmeval's own)
    Config = None


def hang_here():
    if not sys.argv or not sys.argv[0].endswith("openicl_eval.py"):
        return
    once = os.environ.get("HANG_ONCE")
    if once:
        try:
            open(once, "x").close()
        except FileExistsError:
            return
    time.sleep(3600)


if Config is not None:
    load = Config.fromfile

    def fromfile(*args, **kwargs):
        hang_here()
        return load(*args, **kwargs)

    Config.fromfile = staticmethod(fromfile)
"""


@pytest.mark.parametrize("once", [True, False], ids=["once", "always"])
def test_an_opencompass_task_that_hangs_is_stopped_and_the_stage_started_again_once(lmeval_runner, tmp_path, once):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HANG_HOOK)
    scenario = make_chain_scenario(tmp_path / "data")
    work_dir = tmp_path / "out"
    env = {"PYTHONPATH": str(hook), "STANDIN_ANSWER_KEY": str(scenario.key)}
    if once:
        env["HANG_ONCE"] = str(tmp_path / "hung")
    lm = lmeval_runner.run("run", str(MODELS / "demo-chat"), "--dataset", str(scenario.mc), "--gpus", "0",
                           "-w", str(work_dir), "--stall-timeout", "3", "--lmdeploy", str(STANDIN), "--opencompass",
                           str(OPENCOMPASS), env=lmeval_runner.env(**env), work_dir=work_dir, timeout=600)
    run_dir = only_run(work_dir)
    log = run_dir / "lmeval" / "opencompass_eval.log"
    [warning] = [line for line in lm.stderr_lines if "made no progress" in line and "warning" in line]
    assert warning.startswith("lmeval: warning: OpenCompass made no progress for ")
    assert warning.endswith(f" s during eval: its processes used no CPU, no answer or result came and no server had "
                            f"a request; see {log}; stopped it, and eval starts again once from what it saved")
    if once:
        assert lm.poll() == 0, lm.transcript()
        assert read_json(run_dir / "lmeval.json")["stages"]["eval"]["status"] == "ok"
    else:
        assert lm.poll() == 1, lm.transcript()
        assert lm.stderr_lines[-1].startswith("lmeval: error: OpenCompass made no progress for ")
        assert lm.stderr_lines[-1].endswith(f"; see {log}; rerun `lmeval judge --reuse {run_dir.name} -w {work_dir}` "
                                            "to resume")
    assert lmeval_runner.leftovers() == []
