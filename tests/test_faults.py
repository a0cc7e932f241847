"""Fault injection with real processes and signals: the stand-in `lmdeploy` (tp workers in a
session of their own and ignoring SIGTERM, crashes on demand) and the real OpenCompass.

- SIGINT and SIGTERM to lmeval while the servers load, while they warm up (health 503),
  during inference and during evaluation: exit 130, every process gone.
- SIGKILL to lmeval: `lmeval cleanup` ends what was left.
- A target server dying mid-inference, then a judge dying mid-evaluation: lmeval fails at
  once naming the server and its log; `--reuse` sends only what was not answered and ends
  with the scores of an uninterrupted run.
- Stale reuse refused, or redone with --redo without losing the old outputs; a run in use
  refused (lock); a run folder never overwritten.

Every test asserts lmeval's own cleanup first; the `lmeval_runner` fixture then kills whatever a
failed test left, so nothing outlives the session.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from scenarios import (
    JUDGE_BATCH,
    MC_ROWS,
    QA_ROWS,
    answer_columns,
    asked,
    chain_args,
    make_chain_scenario,
    replies_of,
)
from toolkit import (
    MODELS,
    TOOLS,
    copy_run,
    describe,
    frozen,
    health,
    only_run,
    read_json,
    running,
    score_rows,
    stats,
    tree_digest,
    wait_until,
    worker_pids,
)

from lmeval import outputs
from lmeval.readiness import port_open

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
STOP_SECONDS = 15  # from the signal to lmeval's exit: grace 3 s per server, OpenCompass 5 s


def error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("lmeval: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


# ------------------------------------------------------------------ crash and resume


def test_target_crash_mid_inference_fails_at_once_naming_server_and_log(chain):
    step, run_dir = chain.target_crash, chain.run_dir
    assert step.code == 1, step.lmeval.transcript()
    assert error_line(step.stderr) == (
        f"lmeval: error: target server was killed by SIGKILL during infer; see {run_dir}/servers/target.log; "
        f"the answers so far are kept: rerun the same command with --reuse {run_dir.name} to send only the rest")
    assert f"log {run_dir}/servers/target.log, last lines:" in step.stderr
    assert "Traceback" not in step.stderr
    assert step.exit_after_death is not None and step.exit_after_death < 5, step.exit_after_death
    assert chain.leftovers_after["target crash"] == []
    infer = step.manifest["stages"]["infer"]
    assert (infer["status"], infer["message"]) == ("failed", error_line(step.stderr).removeprefix("lmeval: error: "))
    assert infer["started"] < infer["ended"]
    manifest = read_json(run_dir / "lmeval.json")
    assert manifest["stages"]["infer"]["status"] == "ok"  # the later resume finished it
    assert read_json(run_dir / "servers" / "target.json")["stopped"] is True


def test_infer_reuse_sends_only_the_prompts_not_yet_answered(chain):
    saved = chain.saved_before_resume
    # Answers come two at a time, 0.25 s apart: the first four were saved before the sixth
    # was even sent; the fifth and sixth may or may not have been.
    assert set(range(4)) <= saved["trivia"] and len(saved["trivia"]) <= 6, saved
    assert saved["choices"] == set()
    step = chain.target_resume
    assert step.code == 0, step.lmeval.transcript()
    assert step.stdout.strip() == chain.run_dir.name
    unanswered = {question: 1 for dataset, questions in chain.scenario.questions.items()
                  for index, question in enumerate(questions) if index not in saved[dataset]}
    assert asked(step.requests, "demo-chat") == unanswered
    assert chain.leftovers_after["target resume"] == []


def test_judge_crash_mid_evaluation_then_reuse_sends_the_unjudged_rest(chain):
    step, run_dir = chain.judge_crash, chain.run_dir
    assert step.code == 1, step.lmeval.transcript()
    assert error_line(step.stderr) == (
        f"lmeval: error: judge server was killed by SIGKILL during eval; see {run_dir}/servers/judge.log; "
        f"rerun `lmeval judge --reuse {run_dir.name} -w {chain.work_dir}` to resume")
    assert "Traceback" not in step.stderr
    assert step.exit_after_death is not None and step.exit_after_death < 5, step.exit_after_death
    assert chain.leftovers_after["judge crash"] == []
    evaluation = step.manifest["stages"]["eval"]
    assert (evaluation["status"], evaluation["message"]) == ("failed", error_line(step.stderr).removeprefix(
        "lmeval: error: "))
    assert step.manifest["stages"]["infer"]["status"] == "ok" and step.manifest["scores"] == []
    # OpenCompass saves the judge's replies a batch at a time, and the trivia set is one batch
    # (scenarios.JUDGE_BATCH): nothing was saved, and the resume sends the whole set again.
    assert chain.judged_before_resume == 0 and len(QA_ROWS) <= JUDGE_BATCH
    resume = chain.judge_resume
    assert resume.code == 0, resume.lmeval.transcript()
    assert asked(resume.requests, "demo-judge") == {question: 1 for question, *_ in QA_ROWS}
    assert chain.leftovers_after["judge resume"] == []


def test_resumed_run_ends_with_the_exact_scores_and_shows_invalid_judge_replies(chain):
    resume = chain.judge_resume
    rows = score_rows(resume.stdout)
    expected = chain.scenario.expected
    scenario = chain.scenario
    assert rows == {"trivia": ["accuracy", scenario.shown("trivia"), "1 of 12"],
                    "choices": ["accuracy", scenario.shown("choices"), ""]}
    assert ("lmeval: warning: trivia: 1 of 12 judge replies were neither A (correct) nor B (incorrect); "
            "OpenCompass counts them as wrong in accuracy") in resume.stderr.splitlines()
    manifest = read_json(chain.run_dir / "lmeval.json")
    assert manifest["scores"] == [
        {"dataset": "trivia", "metric": "accuracy", "value": float(expected["trivia"]),
         "judge_replies": 12, "judge_invalid": 1, "stderr": pytest.approx(float(scenario.errors["trivia"]), abs=0.005)},
        {"dataset": "choices", "metric": "accuracy", "value": float(expected["choices"]),
         "judge_replies": None, "judge_invalid": None,
         "stderr": pytest.approx(float(scenario.errors["choices"]), abs=0.005)},
    ]
    # Counted once more from the judge's files, through the rows the manifest says they are behind.
    assert manifest["judge_rows"] == {"trivia": ["trivia"]}
    assert outputs.judge_replies(chain.run_dir, "demo-chat", manifest["judge_rows"]["trivia"]) == \
        outputs.JudgeReplies(12, 1)
    shown = chain.results_csv
    assert shown.poll() == 0, shown.transcript()
    # What the answers say: every answer joined to its line of the log, across the crash and resume.
    replies = replies_of(QA_ROWS, MC_ROWS)
    lines = shown.stdout.splitlines()
    assert lines[0] == ("dataset,metric,demo-chat,stderr,invalid_judge_replies,judge_replies,cut_share,cut,empty,"
                        "too_long,tokens_mean,tokens_median,tokens_p95,tokens_max,tokens_per_second")
    assert [line.rsplit(",", 1)[0] for line in lines[1:]] == [
        f"trivia,accuracy,{expected['trivia']},{scenario.errors['trivia']},1,12,{answer_columns(replies['trivia'])}",
        f"choices,accuracy,{expected['choices']},{scenario.errors['choices']},,,{answer_columns(replies['choices'])}",
    ]


# ------------------------------------------------------------------ signals in every phase


def _run_args(scenario, work_dir: Path) -> list[str]:
    """`lmeval run` with a tp-2 target and a tp-2 judge on GPUs of its own (it loads meanwhile)."""
    return ["run", str(MODELS / "demo-chat"), "--dataset", str(scenario.qa), "--dataset", str(scenario.mc),
            "--gpus", "0,1", "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "2,3", "--judge-tp", "2",
            "-w", str(work_dir), "--grace", "3", *TOOLS]


def _server_processes(run_dir: Path, roles: list[str]) -> list[psutil.Process]:
    """Every server of ROLES in RUN_DIR and its tp workers, as objects that tell a reused pid apart."""
    found = []
    for role in roles:
        state = read_json(run_dir / "servers" / f"{role}.json")
        pids = [state["pid"], *worker_pids(Path(state["log"])).values()]
        for pid in pids:
            try:
                found.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
    return found


def _state(run_dir: Path, role: str) -> dict:
    return wait_until(lambda: (run_dir / "servers" / f"{role}.json").exists() and read_json(
        run_dir / "servers" / f"{role}.json"), 60, what=f"{role} server state")


def _both_workers(run_dir: Path, role: str) -> bool:
    return len(worker_pids(run_dir / "servers" / f"{role}.log")) == 2


PHASES = ["loading", "health", "inference", "evaluation"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", PHASES)
def test_signal_in_every_phase_stops_everything(phase, sig, chain, lmeval_runner, tmp_path):
    work_dir = tmp_path / "out"
    scenario = make_chain_scenario(tmp_path / "data")
    key = {"STANDIN_ANSWER_KEY": str(scenario.key)}
    roles = ["target", "judge"]
    if phase == "evaluation":
        run_dir = copy_run(chain.inferred_snapshot, work_dir, "20200101_000000", chain.run_dir)
        lm = lmeval_runner.start("judge", "--reuse", run_dir.name, "--judge-model", str(MODELS / "demo-judge"),
                                 "--judge-gpus", "2,3", "--judge-tp", "2", "-w", str(work_dir), "--grace", "3", *TOOLS,
                                 env=lmeval_runner.env(**key, STANDIN_LATENCY_SECONDS="60"), work_dir=work_dir)
        roles = ["judge"]
    else:
        extra = {"loading": {"STANDIN_LOAD_SECONDS": "60"}, "health": {"STANDIN_WARMUP_SECONDS": "60"},
                 "inference": {"STANDIN_LATENCY_SECONDS": "60"}}[phase]
        lm = lmeval_runner.start(*_run_args(scenario, work_dir), env=lmeval_runner.env(**key, **extra),
                                 work_dir=work_dir)
        run_dir = wait_until(lambda: next(iter(work_dir.glob("2*")), None), 30, what="the run folder")

    states = {role: _state(run_dir, role) for role in roles}
    for role in roles:
        wait_until(lambda role=role: _both_workers(run_dir, role), 30, what=f"{role} tp workers")
    main = states[roles[0]]
    if phase == "loading":
        lm.wait_line(r"lmeval: waiting for target server\(s\) to load")
        assert not port_open("127.0.0.1", main["port"])
    elif phase == "health":
        wait_until(lambda: health(main["port"]) == 503, 30, what="/health 503")
    else:  # OpenCompass is running and its first requests are out
        wait_until(lambda: (stats(main["port"]) or {}).get("requests", 0) >= 1, 120, what="the first request")
    processes = _server_processes(run_dir, roles)
    assert len(processes) == 3 * len(roles)  # each server: its main process and two workers
    assert lm.poll() is None, lm.transcript()

    signalled = time.monotonic()
    lm.popen.send_signal(sig)
    code = lm.wait(60)
    took = time.monotonic() - signalled

    assert code == 130, lm.transcript()
    assert lm.stderr.splitlines()[-1] == (f"lmeval: error: interrupted by {SIGNAL_NAMES[sig]}; "
                                          "every server lmeval started has been stopped")
    assert "Traceback" not in lm.stderr
    assert took < STOP_SECONDS, took
    assert [p.pid for p in processes if running(p)] == []
    assert describe(lmeval_runner.leftovers()) == ""
    for role in roles:
        assert read_json(run_dir / "servers" / f"{role}.json")["stopped"] is True
    stages = read_json(run_dir / "lmeval.json")["stages"]
    if phase in ("inference", "evaluation"):
        stage = "infer" if phase == "inference" else "eval"
        assert stages[stage]["status"] == "interrupted"


@pytest.mark.usefixtures("venvs")
def test_sigkill_leaves_what_lmeval_cleanup_ends(lmeval_runner, tmp_path):
    work_dir = tmp_path / "out"
    scenario = make_chain_scenario(tmp_path / "data")
    lm = lmeval_runner.start(*_run_args(scenario, work_dir), work_dir=work_dir,
                             env=lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario.key), STANDIN_LATENCY_SECONDS="60"))
    run_dir = wait_until(lambda: next(iter(work_dir.glob("2*")), None), 30, what="the run folder")
    port = _state(run_dir, "target")["port"]
    wait_until(lambda: (stats(port) or {}).get("requests", 0) >= 1, 120, what="the first request")
    wait_until(lambda: _both_workers(run_dir, "judge"), 30, what="judge tp workers")
    servers = _server_processes(run_dir, ["target", "judge"])

    lm.popen.send_signal(signal.SIGKILL)
    assert lm.wait(10) == -signal.SIGKILL
    # The servers' main processes get SIGTERM as lmeval dies; the tp workers stay, as LMDeploy's do.
    # Once the dying main processes are gone, every server process still alive is a leftover.
    def settled() -> list | None:
        left = lmeval_runner.leftovers()
        return left if left and {p.pid for p in servers if running(p)} <= {p.pid for p in left} else None

    left = wait_until(settled, 10, what="the leftovers to settle")
    assert len(left) >= 4, describe(left)

    cleanup = lmeval_runner.run("cleanup", "-w", str(work_dir), "--grace", "3", work_dir=work_dir)
    assert cleanup.poll() == 0, cleanup.transcript()
    assert cleanup.stderr.splitlines()[-1].startswith("lmeval: cleanup done: ")
    assert describe(lmeval_runner.leftovers()) == ""
    assert [p.pid for p in servers if running(p)] == []


def _sigkill_pending(pid: int) -> bool:
    """Whether PID has a SIGKILL it cannot act on yet (as a process stuck in a driver call)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    pending = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask & (1 << (signal.SIGKILL - 1)) for mask in pending)


def test_a_process_that_outlives_sigkill_is_named_and_the_third_ctrl_c_gives_up(lmeval_runner, tmp_path):
    """A tp worker stuck as in the GPU driver after SIGKILL (frozen: state D until the test thaws
    it): the second Ctrl-C says what lmeval waits for, the third ends lmeval at once, naming the
    pid and the cleanup command; `lmeval cleanup` finishes the job once the process can die."""
    work_dir = tmp_path / "out"
    scenario = make_chain_scenario(tmp_path / "data")
    lm = lmeval_runner.start(*_run_args(scenario, work_dir), work_dir=work_dir,
                             env=lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario.key), STANDIN_LATENCY_SECONDS="60"))
    run_dir = wait_until(lambda: next(iter(work_dir.glob("2*")), None), 30, what="the run folder")
    target = _state(run_dir, "target")
    wait_until(lambda: (stats(target["port"]) or {}).get("requests", 0) >= 1, 120, what="the first request")
    wait_until(lambda: _both_workers(run_dir, "judge"), 30, what="judge tp workers")
    stuck = worker_pids(run_dir / "servers" / "target.log")[1]
    others = [p for p in _server_processes(run_dir, ["target", "judge"]) if p.pid != stuck]
    with frozen(stuck):
        lm.signal(signal.SIGINT)
        lm.wait_line(r"lmeval: stopped judge server \(3 processes ended\)", 60)
        wait_until(lambda: _sigkill_pending(stuck), 30, what="lmeval to SIGKILL the stuck worker")
        lm.signal(signal.SIGINT)
        lm.wait_line(rf"lmeval: still stopping: waiting \d+ s so far for the target server to end after SIGKILL "
                     rf"\(pids {stuck}\); press Ctrl-C again to stop waiting and leave them to `lmeval cleanup`", 10)
        gave_up = lm.signal(signal.SIGINT)
        code = lm.wait(10)
        took = lm.ended - gave_up
        assert code == 130, lm.transcript()
        assert took < 2, f"lmeval took {took:.2f} s to give up"
        assert lm.stderr_lines[-3:] == [
            f"lmeval: stopped waiting for the target server to end after SIGKILL (pids {stuck})",
            f"lmeval: warning: target server: 2 processes ended; still running: pid {stuck} (disk-sleep)",
            f"lmeval: error: interrupted by Ctrl-C; still running: pid {stuck} (disk-sleep) of the target server; "
            f"end them with `lmeval cleanup -w {work_dir}` once they can be killed",
        ], lm.transcript()
        assert [p.pid for p in others if running(p)] == []
        assert [p.pid for p in lmeval_runner.leftovers()] == [stuck]
        manifest = read_json(run_dir / "lmeval.json")
        assert (manifest["stages"]["infer"]["status"], manifest["stages"]["infer"]["message"]) == \
            ("interrupted", "interrupted by Ctrl-C")
        assert read_json(run_dir / "servers" / "target.json")["stopped"] is False  # honest: it was not
        assert read_json(run_dir / "servers" / "judge.json")["stopped"] is True
    wait_until(lambda: not lmeval_runner.leftovers(), 10, what="the thawed worker to die of its SIGKILL")
    cleanup = lmeval_runner.run("cleanup", "-w", str(work_dir), "--grace", "3", work_dir=work_dir)
    assert cleanup.poll() == 0, cleanup.transcript()
    assert cleanup.stderr_lines == ["lmeval: nothing to clean up"]
    assert read_json(run_dir / "servers" / "target.json")["stopped"] is True


# ------------------------------------------------------------------ one run, one lmeval


def _outside_servers(digest: dict[str, str]) -> dict[str, str]:
    """The running server's log grows meanwhile; everything else must stay as it was."""
    return {path: value for path, value in digest.items() if not path.startswith("servers")}


@pytest.mark.usefixtures("venvs")
def test_a_run_in_use_is_refused(lmeval_runner, tmp_path):
    work_dir = tmp_path / "out"
    scenario = make_chain_scenario(tmp_path / "data")
    env = lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario.key), STANDIN_LOAD_SECONDS="60")
    first = lmeval_runner.start("infer", *chain_args(scenario, work_dir), env=env, work_dir=work_dir)
    first.wait_line(r"lmeval: waiting for target server\(s\) to load", 60)
    run_dir = only_run(work_dir)
    before = _outside_servers(tree_digest(run_dir))
    for args in (["infer", *chain_args(scenario, work_dir, "--reuse", run_dir.name)],
                 ["infer", *chain_args(scenario, work_dir, "--reuse", run_dir.name, "--dry-run")]):
        second = lmeval_runner.run(*args, env=env, work_dir=work_dir, timeout=30)
        assert second.poll() == 2, second.transcript()
        assert error_line(second.stderr) == (f"lmeval: error: run {run_dir.name} is in use by another lmeval "
                                             f"(pid {first.pid}); wait for it to finish or pick another run")
        assert "started" not in second.stderr and second.stdout == ""
    assert _outside_servers(tree_digest(run_dir)) == before
    first.popen.send_signal(signal.SIGTERM)
    assert first.wait(30) == 130
    assert describe(lmeval_runner.leftovers()) == ""


def test_a_new_run_never_takes_an_existing_folder(tmp_path):
    from lmeval.runs import claim_new_folder

    moment = datetime(2025, 1, 1, 12, 0, 0)
    for taken in ("20250101_120000", "20250101_120001"):
        (tmp_path / taken).mkdir()
        (tmp_path / taken / "lmeval.json").write_text("{}")
    run_id, folder = claim_new_folder(tmp_path, now=moment)
    assert run_id == "20250101_120002" and folder == tmp_path / run_id
    assert [p.name for p in folder.iterdir()] == []
    assert (tmp_path / "20250101_120000" / "lmeval.json").read_text() == "{}"


def test_run_lock_is_exclusive(tmp_path):
    from lmeval.exceptions import UsageError
    from lmeval.manifest import RunLock

    with RunLock(tmp_path):
        with pytest.raises(UsageError) as refused:
            with RunLock(tmp_path):
                pass
        assert refused.value.message.startswith(f"run {tmp_path.name} is in use by another lmeval (pid ")
    with RunLock(tmp_path):  # released: the next one gets it
        pass


# ------------------------------------------------------------------ stale reuse


@pytest.fixture
def inferred(chain, tmp_path):
    """A copy of the chain's run right after its inference completed, and its arguments."""
    work_dir = tmp_path / "out"
    run_dir = copy_run(chain.inferred_snapshot, work_dir, "20200101_000000", chain.run_dir)
    return run_dir, work_dir, chain.scenario


def _changed_dataset(scenario, folder: Path) -> Path:
    folder.mkdir()
    changed = folder / "trivia.jsonl"
    changed.write_text(scenario.qa.read_text().replace("Paris", "Lyon"))
    return changed


@pytest.mark.parametrize("change, extra, message", [
    ("model", ["--name", "demo-chat"], "with model {models}/demo-chat, not {models}/demo-judge"),
    ("name", ["--name", "other"], "under the name demo-chat, not other"),
    ("temperature", ["--temperature", "0.1"], "with temperature 0.6, not 0.1"),
    ("generation", ["--max-out-len", "100", "--max-seq-len", "200"],
     "with max-out-len 64000, not 100; max-seq-len 65536, not 200"),
    ("fewer datasets", [], "for datasets trivia, choices, not trivia"),
    ("dataset content", [], "from other contents of dataset trivia"),
])
def test_stale_reuse_is_refused_and_changes_nothing(change, extra, message, inferred, lmeval_runner, tmp_path):
    run_dir, work_dir, scenario = inferred
    args = chain_args(scenario, work_dir, "--reuse", run_dir.name, *extra)
    if change == "model":
        args[0] = str(MODELS / "demo-judge")
    elif change == "fewer datasets":
        args[3:5] = []  # drop `--dataset choices.jsonl`
    elif change == "dataset content":
        args[2] = str(_changed_dataset(scenario, tmp_path / "changed"))
    before = tree_digest(run_dir)
    started = time.monotonic()
    refused = lmeval_runner.run("infer", *args, work_dir=work_dir, timeout=30)
    assert refused.poll() == 2, refused.transcript()
    assert time.monotonic() - started < 15
    assert error_line(refused.stderr) == (
        f"lmeval: error: run {run_dir.name} was inferred {message.format(models=MODELS)}; its predictions would be "
        f"mixed with new ones: start a new run, or add --redo to move its outputs aside into "
        f"{run_dir.name}/stale-<time>/ and infer again")
    assert "Traceback" not in refused.stderr and refused.stdout == ""
    assert tree_digest(run_dir) == before


def test_redo_moves_the_stale_outputs_aside_and_matches_the_resumed_scores(chain, inferred, lmeval_runner, tmp_path):
    run_dir, work_dir, scenario = inferred
    requests = tmp_path / "requests.jsonl"
    old = {path: path.read_bytes() for path in (run_dir / "predictions").rglob("*") if path.is_file()}
    old_fingerprint = read_json(run_dir / "lmeval.json")["fingerprint"]
    args = ["run", *chain_args(scenario, work_dir, "--reuse", run_dir.name, "--temperature", "0.1", "--redo"),
            "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "1", "--judge-tp", "1"]
    lm = lmeval_runner.start(*args, work_dir=work_dir,
                             env=lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario.key), STANDIN_JUDGE_INVALID="Marlowe",
                                                   STANDIN_REQUEST_LOG=str(requests)))
    code = lm.wait(300)
    assert code == 0, lm.transcript()
    stale = [p for p in run_dir.iterdir() if p.name.startswith("stale-")]
    assert len(stale) == 1
    assert (f"lmeval: warning: run {run_dir.name} was inferred with temperature 0.6, not 0.1: its outputs were "
            f"moved to {stale[0]}; inferring again") in lm.stderr.splitlines()
    # Nothing lost: the old predictions are in the stale folder, byte for byte.
    for path, data in old.items():
        assert (stale[0] / path.relative_to(run_dir)).read_bytes() == data
    assert (stale[0] / "lmeval.json").is_file()
    # Every prompt was sent again, and the scores are those of the crashed-and-resumed run.
    assert asked(requests, "demo-chat") == {question: 1 for question, *_ in QA_ROWS + MC_ROWS}
    assert score_rows(lm.stdout) == score_rows(chain.judge_resume.stdout)
    manifest = read_json(run_dir / "lmeval.json")
    assert manifest["fingerprint"] != old_fingerprint
    assert manifest["inputs"]["generation"]["temperature"] == 0.1
    assert [entry["moved_to"] for entry in manifest["stale"]] == [stale[0].name]
    assert manifest["stale"][0]["fingerprint"] == old_fingerprint
    assert describe(lmeval_runner.leftovers()) == ""
