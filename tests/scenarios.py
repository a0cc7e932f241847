"""The scenarios the process tests run: datasets with a known share answered right and the
stand-in's answer key, the expected scores computed from the rows alone (never from a run),
and the crash/resume chain several test modules read.

- `make_scenario`: a QA file (judged) and a multiple-choice file (scored by rule).
- `ServerWatch`: polls a server of a run while lmeval runs: its key (from its command line),
  where it listens, what it answers without the key, when it died.
- `asked`: how often each question reached a model's server, from the stand-in's request log
  (written as each request arrives, so nothing sent just before a server stops is missed).
- `sweep_models`: models whose answer keys give each its own scores, for `lmeval run A B C`.
- `crash_chain`: the run shared by the crash/resume, judge-quality and security tests
  (memoized, so the modules that use it pay for it once).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from lmeval.configgen import JUDGE_BATCH_FACTOR
from lmeval.plan import in_flight
from lmeval.readiness import http_client
from toolkit import (
    MODELS,
    TOOLS,
    VENVS,
    Lmeval,
    Runner,
    describe,
    health,
    lmeval_env,
    only_run,
    read_json,
    running,
    wait_until,
)


def judge_agrees(reply: str, gold: str) -> bool:
    """The stand-in judge's rule, written out again here so the expected scores do not come
    from the code that produces them: case, runs of spaces and a trailing stop are ignored."""
    def norm(text: str) -> str:
        return re.sub(r"\s+", " ", text).strip().casefold().rstrip(".,!?")
    return norm(reply) == norm(gold)


QaRow = tuple[str, str, str]  # question, gold answer, the stand-in's reply
McRow = tuple[str, list[str], str, str]  # question, options A.., gold letter, the letter replied


def write_scenario(folder: Path, qa_rows: list[QaRow], mc_rows: list[McRow]) -> tuple[Path, Path, Path, dict[str, float]]:
    """trivia.jsonl (QA, judged), choices.jsonl (multiple choice) and the stand-in's answer key
    in FOLDER, and the accuracy in percent each dataset must score, from the rows alone."""
    folder.mkdir(parents=True, exist_ok=True)
    qa, mc, key = folder / "trivia.jsonl", folder / "choices.jsonl", folder / "key.json"
    qa.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a, _ in qa_rows))
    mc.write_text("".join(json.dumps({"question": q, **dict(zip("ABC", opts)), "answer": a}) + "\n"
                          for q, opts, a, _ in mc_rows))
    entries = [{"match": q, "reply": reply} for q, _, reply in qa_rows]
    entries += [{"match": q, "reply": f"The answer is {reply}."} for q, _, _, reply in mc_rows]
    key.write_text(json.dumps(entries))
    outcomes = row_outcomes(qa_rows, mc_rows)
    expected = {name: 100 * sum(right) / len(right) for name, right in outcomes.items()}
    return qa, mc, key, expected


def row_outcomes(qa_rows: list[QaRow], mc_rows: list[McRow]) -> dict[str, list[bool]]:
    """Whether each row is answered right, by dataset: by the stand-in judge's rule, or the letter."""
    return {"trivia": [judge_agrees(reply, gold) for _, gold, reply in qa_rows],
            "choices": [reply == gold for _, _, gold, reply in mc_rows]}


def answer_columns(replies: list[str]) -> str:
    """The CSV columns `lmeval results` gives the answers REPLIES, cut_share to tokens_max (the
    tokens/s after them depend on the clock), computed here: none cut, empty or too long, and
    their tokens as the stand-in counts them (words)."""
    tokens = sorted(len(reply.split()) for reply in replies)
    stats = (0, 0, 0, 0, round(sum(tokens) / len(tokens), 1), statistics.median(tokens),
             tokens[math.ceil(0.95 * len(tokens)) - 1], tokens[-1])
    return ",".join(f"{value:g}" for value in stats)


def replies_of(qa_rows: list[QaRow], mc_rows: list[McRow]) -> dict[str, list[str]]:
    """What the stand-in answers each dataset's rows (write_scenario's key)."""
    return {"trivia": [reply for _, _, reply in qa_rows],
            "choices": [f"The answer is {reply}." for _, _, _, reply in mc_rows]}


def standard_error(right: list[bool]) -> float:
    """The standard error over questions, in points: 100 sd(outcomes, n - 1) / sqrt(n), written out here."""
    n, share = len(right), sum(right) / len(right)
    return 100 * math.sqrt(share * (1 - share) * n / (n - 1)) / math.sqrt(n)


@dataclass
class Scenario:
    qa: Path
    mc: Path
    key: Path
    expected: dict[str, float]  # dataset name -> accuracy in percent


def make_scenario(folder: Path) -> Scenario:
    """A QA file (3 of 5 answered right) and a multiple-choice file (4 of 5), with the key:
    the first five rows of the chain's QA file and its multiple-choice file."""
    return Scenario(*write_scenario(folder, QA_ROWS[:5], MC_ROWS))


# ---------------------------------------------------------------- a broken OpenCompass

NUMPY_2 = "pyarrow requires NumPy 2.0 or newer"


def unimportable_venv(folder, module: str = "pyarrow", message: str = NUMPY_2):
    """OpenCompass's venv where `import MODULE` fails with MESSAGE, by default as pyarrow does with
    NumPy 1 and pyarrow 21: its python runs the real one with a MODULE that raises first on the path."""
    shadow = folder / "shadow" / module
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f"raise ImportError({message!r})\n")
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    real = VENVS / "opencompass" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={shadow.parent}${{PYTHONPATH:+:$PYTHONPATH}} exec {real} "$@"\n')
    opencompass = bin_dir / "opencompass"
    opencompass.write_text(f"#!{python}\nimport sys\nfrom opencompass.cli.main import main\nsys.exit(main())\n")
    for path in (python, opencompass):
        path.chmod(0o755)
    return opencompass


# ---------------------------------------------------------------- watching a server


PROBE_SECONDS = 0.3  # between two looks at a running server (each leaves a line in its log)


@dataclass
class Observation:
    pid: int | None = None
    port: int | None = None
    key: str | None = None
    listen: set[str] = field(default_factory=set)
    unauthorized_status: int | None = None
    died_at: float | None = None  # monotonic time the server process was first seen gone


class ServerWatch:
    """Polls the ROLE server of RUN_DIR on a thread while an lmeval command runs.

    A state file left by an earlier command of the same run is told apart by its tag.
    """

    def __init__(self, run_dir: Path, role: str, interval: float = 0.05, new_run: bool = False) -> None:
        self.state_path = run_dir / "servers" / f"{role}.json"
        self.old_tag = None
        if not new_run and self.state_path.exists():
            self.old_tag = read_json(self.state_path).get("tag")
        self.seen = Observation()
        self.interval = interval
        self._last_probe = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        process = None
        while not self._stop.is_set():
            if process is None:
                try:
                    state = read_json(self.state_path)
                except (OSError, ValueError):
                    state = {}
                if state.get("tag") and state.get("tag") != self.old_tag:
                    try:
                        process = psutil.Process(state["pid"])
                        self.seen.pid, self.seen.port = state["pid"], state["port"]
                        argv = process.cmdline()
                        self.seen.key = argv[argv.index("--api-keys") + 1]
                    except (psutil.Error, ValueError, IndexError):
                        process = None
            else:
                self._observe(process)
            time.sleep(self.interval)

    def _observe(self, process: psutil.Process) -> None:
        if not running(process):
            if self.seen.died_at is None:
                self.seen.died_at = time.monotonic()
            return
        if time.monotonic() - self._last_probe < PROBE_SECONDS:
            return
        self._last_probe = time.monotonic()
        if health(self.seen.port) is not None:
            if self.seen.unauthorized_status is None:
                try:
                    with http_client() as client:
                        self.seen.unauthorized_status = client.get(
                            f"http://127.0.0.1:{self.seen.port}/v1/models").status_code
                except httpx.HTTPError:
                    pass
            try:
                for connection in process.net_connections(kind="inet"):
                    if connection.status == psutil.CONN_LISTEN:
                        self.seen.listen.add(connection.laddr.ip)
            except psutil.Error:
                pass

    def stop(self) -> Observation:
        self._stop.set()
        self._thread.join(5)
        return self.seen


# ---------------------------------------------------------------- the shared crash chain

# (question, gold, the model's reply). "Marlowe" is wrong, and the judge replies to it with
# neither A nor B (STANDIN_JUDGE_INVALID): the score is the same either way.
QA_ROWS = [
    ("Which metal is liquid at room temperature?", "Mercury", "Mercury"),
    ("Which planet is the largest?", "Jupiter", "Saturn"),
    ("What gas do plants absorb?", "Carbon dioxide", "carbon dioxide."),
    ("Who wrote Hamlet?", "Shakespeare", "Marlowe"),
    ("What is frozen water called?", "Ice", "Ice"),
    ("What is the capital of France?", "Paris", "Paris"),
    ("How many legs does a spider have?", "8", "8"),
    ("What colour is the sky on a clear day?", "Blue", "Green"),
    ("Which ocean is the largest?", "Pacific", "Pacific"),
    ("What is the chemical symbol for gold?", "Au", "Au"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", "leonardo  da vinci"),
    ("What is the boiling point of water in Celsius?", "100", "212"),
]
MC_ROWS = [
    ("Pick the prime: ", ["4", "6", "7"], "C", "C"),
    ("Pick the even: ", ["3", "8", "9"], "B", "B"),
    ("Pick the square: ", ["16", "15", "14"], "A", "A"),
    ("Pick the odd: ", ["2", "4", "5"], "C", "A"),
    ("Pick the cube: ", ["9", "27", "30"], "B", "B"),
]
INVALID_MARKER = "Marlowe"


def asked(log: Path, model: str, rows: list = QA_ROWS + MC_ROWS) -> Counter[str]:
    """How often each question of ROWS reached MODEL's server, from the stand-in's request log
    (STANDIN_REQUEST_LOG; no file: nothing was asked)."""
    questions = [question for question, *_ in rows]
    counts: Counter[str] = Counter()
    lines = log.read_text().splitlines() if log.exists() else []
    for body in map(json.loads, lines):
        if body["model"] == model:
            text = body["messages"][-1]["content"]
            counts[next(question for question in questions if question in text)] += 1
    return counts


@dataclass
class ChainScenario:
    qa: Path
    mc: Path
    key: Path
    expected: dict[str, str]  # dataset -> score as the table shows it
    questions: dict[str, list[str]]  # dataset -> the answer-key match of each row, by index
    errors: dict[str, str]  # dataset -> its standard error as the table shows it

    def shown(self, dataset: str) -> str:
        """The score's cell in the table: `66.67 ± 14.21`."""
        return f"{self.expected[dataset]} ± {self.errors[dataset]}"


def make_chain_scenario(folder: Path) -> ChainScenario:
    qa, mc, key, expected = write_scenario(folder, QA_ROWS, MC_ROWS)
    questions = {"trivia": [q for q, _, _ in QA_ROWS], "choices": [q for q, *_ in MC_ROWS]}
    errors = {name: f"{standard_error(right):.2f}" for name, right in row_outcomes(QA_ROWS, MC_ROWS).items()}
    return ChainScenario(qa, mc, key, {name: f"{score:.2f}" for name, score in expected.items()}, questions, errors)


def chain_args(scenario: ChainScenario, work_dir: Path, *extra: str) -> list[str]:
    """`infer` arguments of the chain: target capacity 2, so answers come two at a time."""
    return [str(MODELS / "demo-chat"), "--dataset", str(scenario.qa), "--dataset", str(scenario.mc),
            "--gpus", "0", "--server-args", "--max-batch-size 2", "-w", str(work_dir), "--grace", "3",
            *TOOLS, *extra]


def judge_args(run_id: str, work_dir: Path, *extra: str) -> list[str]:
    """`judge` arguments of the chain: judge capacity 2, so its batches are 12 prompts (JUDGE_BATCH)."""
    return ["--reuse", run_id, "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "1", "--judge-tp", "1",
            "--judge-server-args", "--max-batch-size 2", "-w", str(work_dir), "--grace", "3", *TOOLS, *extra]


@dataclass
class Step:
    lmeval: Lmeval
    watch: Observation
    code: int
    stdout: str
    stderr: str
    seconds: float  # the whole command
    manifest: dict  # the run's manifest right after the step
    requests: Path  # the stand-ins' request log of the step (see `asked`)
    exit_after_death: float | None = None  # from the server's death to lmeval's exit


@dataclass
class Chain:
    scenario: ChainScenario
    work_dir: Path
    run_dir: Path
    target_crash: Step
    saved_before_resume: dict[str, set[int]]  # dataset -> row indices OpenCompass had saved
    target_resume: Step
    inferred_snapshot: Path  # the run right after inference completed (for later copies)
    judge_crash: Step
    judged_before_resume: int  # judge replies saved in its tmp file
    judge_resume: Step
    results_csv: Lmeval
    leftovers_after: dict[str, list[str]]  # step -> processes left after it (must be empty)


TARGET_CRASH_AFTER = 6
# The judge's threads are the requests lmeval keeps in flight at its capacity (2), each batch
# holds JUDGE_BATCH_FACTOR times that, and OpenCompass saves the judge's replies batch by batch.
# The chain's trivia set is one batch: the crash loses every reply of it. (tests/test_restarts.py
# has a judge crash after a saved batch.)
JUDGE_BATCH = in_flight(2) * JUDGE_BATCH_FACTOR
JUDGE_CRASH_AFTER = 10
assert JUDGE_CRASH_AFTER < len(QA_ROWS) <= JUDGE_BATCH, "the trivia set must be one batch, outlasting the crash"


def _step(runner: Runner, args: list[str], env: dict[str, str], work_dir: Path, run_dir: Path | None,
          role: str, requests: Path) -> Step:
    process = runner.start(*args, env={**env, "STANDIN_REQUEST_LOG": str(requests)}, work_dir=work_dir)
    new_run = run_dir is None
    if new_run:  # watch it once its folder exists
        run_dir = wait_until(lambda: next(iter(work_dir.glob("2*")), None), 60, what="the run folder")
    watch = ServerWatch(run_dir, role, new_run=new_run)
    code = process.wait(300)
    seen = watch.stop()
    died = seen.died_at
    manifest = read_json(run_dir / "lmeval.json")
    return Step(process, seen, code, process.stdout, process.stderr, process.ended - process.started,
                manifest, requests, None if died is None else process.ended - died)


def _saved_rows(run_dir: Path, model: str) -> dict[str, set[int]]:
    saved = {}
    for dataset in ("trivia", "choices"):
        tmp = run_dir / "predictions" / model / f"tmp_{dataset}.jsonl"
        done = run_dir / "predictions" / model / f"{dataset}.json"
        if done.exists():
            saved[dataset] = {int(i) for i in read_json(done)}
        elif tmp.exists():
            saved[dataset] = {int(json.loads(line)["idx"]) for line in tmp.read_text().splitlines() if line.strip()}
        else:
            saved[dataset] = set()
    return saved


_CHAIN: dict[str, Chain] = {}


def crash_chain(folder: Path) -> Chain:
    """Built once per session:

    1. `lmeval infer --restarts 0` whose target server SIGKILLs itself after 6 answers (2 at a time);
    2. `lmeval infer --reuse RUN`: sends only what step 1 did not save;
    3. `lmeval judge --reuse RUN --restarts 0` whose judge SIGKILLs itself after 10 replies (of a batch of 12);
    4. `lmeval judge --reuse RUN`: sends the batch again (none of it was saved);
    5. `lmeval results RUN --format csv`.
    Step 3 and 4 make the judge answer "Marlowe" with neither A nor B.
    """
    if "chain" in _CHAIN:
        return _CHAIN["chain"]
    runner = Runner(folder)
    work_dir = folder / "out"
    scenario = make_chain_scenario(folder / "data")
    left: dict[str, list[str]] = {}
    try:
        key = {"STANDIN_ANSWER_KEY": str(scenario.key), "STANDIN_LATENCY_SECONDS": "0.25"}
        crash = _step(runner, ["infer", *chain_args(scenario, work_dir, "--restarts", "0")],
                      lmeval_env(**key, STANDIN_CRASH_AFTER_REQUESTS=str(TARGET_CRASH_AFTER)), work_dir, None, "target",
                      folder / "requests-target-crash.jsonl")
        left["target crash"] = describe(runner.leftovers()).splitlines()
        run_dir = only_run(work_dir)
        saved = _saved_rows(run_dir, "demo-chat")
        resume = _step(runner, ["infer", *chain_args(scenario, work_dir, "--reuse", run_dir.name)],
                       lmeval_env(**key), work_dir, run_dir, "target", folder / "requests-target-resume.jsonl")
        left["target resume"] = describe(runner.leftovers()).splitlines()
        snapshot = folder / "inferred-snapshot"
        shutil.copytree(run_dir, snapshot, symlinks=True)
        judge_env = {"STANDIN_ANSWER_KEY": str(scenario.key), "STANDIN_JUDGE_INVALID": INVALID_MARKER,
                     "STANDIN_LATENCY_SECONDS": "0.05"}
        judge_crash = _step(runner, ["judge", *judge_args(run_dir.name, work_dir, "--restarts", "0")],
                            lmeval_env(**judge_env, STANDIN_CRASH_AFTER_REQUESTS=str(JUDGE_CRASH_AFTER)),
                            work_dir, run_dir, "judge", folder / "requests-judge-crash.jsonl")
        left["judge crash"] = describe(runner.leftovers()).splitlines()
        tmp = run_dir / "results" / "demo-chat" / "tmp_trivia_replica0.jsonl"
        judged = len([line for line in tmp.read_text().splitlines() if line.strip()]) if tmp.exists() else 0
        judge_resume = _step(runner, ["judge", *judge_args(run_dir.name, work_dir)], lmeval_env(**judge_env),
                             work_dir, run_dir, "judge", folder / "requests-judge-resume.jsonl")
        left["judge resume"] = describe(runner.leftovers()).splitlines()
        shown = runner.run("results", run_dir.name, "-w", str(work_dir), "--format", "csv", work_dir=work_dir)
    finally:
        runner.teardown()
    chain = Chain(scenario, work_dir, run_dir, crash, saved, resume, snapshot, judge_crash, judged, judge_resume,
                  shown, left)
    _CHAIN["chain"] = chain
    return chain


# ---------------------------------------------------------------- several models (sweeps)

# Each model's replies: the chain's rows with the first N trivia replies made right or wrong.
SWEEP_REPLIES = {
    "alpha": (QA_ROWS, MC_ROWS),
    "beta": ([(q, gold, gold) for q, gold, _ in QA_ROWS], MC_ROWS),
    "gamma": ([(q, gold, "no idea") for q, gold, _ in QA_ROWS[:6]] + QA_ROWS[6:],
              [(q, options, gold, gold) for q, options, gold, _ in MC_ROWS]),
}


def sweep_models(folder: Path, replies: dict[str, tuple[list[QaRow], list[McRow]]]):
    """Model folders in FOLDER named after REPLIES, the `--dataset` arguments (the same questions
    for every model), a folder of answer keys (one per model: STANDIN_ANSWER_KEY) and each model's
    expected scores as the table shows them."""
    keys = folder / "keys"
    keys.mkdir()
    expected, folders = {}, []
    for name, (qa_rows, mc_rows) in replies.items():
        qa, mc, key, scores = write_scenario(folder / "data" / name, qa_rows, mc_rows)
        shutil.copy(key, keys / f"{name}.json")
        shutil.copytree(MODELS / "demo-chat", folder / "models" / name)
        folders.append(folder / "models" / name)
        expected[name] = {dataset: round(score, 2) for dataset, score in scores.items()}
        datasets = ["--dataset", str(qa), "--dataset", str(mc)]
    return folders, datasets, keys, expected


def sweep_cells(replies: dict[str, tuple[list[QaRow], list[McRow]]]) -> dict[str, dict[str, str]]:
    """Each model's score cells as the tables show them: `66.67 ± 14.21`."""
    cells = {}
    for name, (qa_rows, mc_rows) in replies.items():
        cells[name] = {dataset: f"{100 * sum(right) / len(right):.2f} ± {standard_error(right):.2f}"
                       for dataset, right in row_outcomes(qa_rows, mc_rows).items()}
    return cells


def run_manifests(work_dir: Path) -> dict[str, dict]:
    """The manifest of every run in WORK_DIR, by its model."""
    manifests = (read_json(path) for path in sorted(work_dir.glob("*/lmeval.json")))
    return {manifest["model_abbr"]: manifest for manifest in manifests}


def run_scores(work_dir: Path) -> dict[str, dict[str, float]]:
    """Each model's scores, as its run's manifest records them, for every run in WORK_DIR."""
    return {model: {entry["dataset"]: entry["value"] for entry in manifest["scores"]}
            for model, manifest in run_manifests(work_dir).items()}
