"""Shared pieces of the fault-injection tests (test_faults, test_bad_input, test_security).

- `Lmeval`: one `python -m lmeval ...` subprocess with stdout/stderr in files, SIGINT restored
  (a shell that starts pytest in the background leaves it ignored, and that survives exec).
- `leftovers`: every live process lmeval tagged for a run of a work dir, or owned by given
  lmeval pids: servers, their tp workers, OpenCompass and its tasks.
- `Reaper`: after a test, passed or failed, kills what the test started; the tests assert
  lmeval's own cleanup BEFORE this runs.
- `ServerWatch`: polls a server of a run while lmeval runs: its request counts
  (`/standin/stats`), its key (from its command line), where it listens, what it answers
  without the key.
- `ChainScenario`/`crash_chain`: the run shared by the crash/resume, judge-quality and
  security tests (memoized, so the modules that use it pay for it once).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from e2e_support import write_scenario
from helpers_processes import (
    REPO,
    RUN_ENV,
    STANDIN,
    TAG_ENV,
    VENVS,
    lmeval_env,
    owner_pid,
    processes_where,
    running,
    wait_until as poll_until,
)

from lmeval.configgen import JUDGE_BATCH_FACTOR

MODELS = REPO / "examples" / "sample" / "models"
OPENCOMPASS = VENVS / "opencompass" / "bin" / "opencompass"
TOOLS = ["--lmdeploy", str(STANDIN), "--opencompass", str(OPENCOMPASS)]

# Fast stand-in servers; the workers' safety net ends them even if everything else failed.
STANDIN_ENV = {"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_WARMUP_SECONDS": "0.2",
               "STANDIN_WORKER_MAX_SECONDS": "300", "STANDIN_SHUTDOWN_TIMEOUT": "2"}


def base_env(**extra: str) -> dict[str, str]:
    return lmeval_env(STANDIN_ENV, **extra)


def _restore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Lmeval:
    """One lmeval subprocess; its output goes to files under FOLDER."""

    count = 0

    def __init__(self, args: list[str], env: dict[str, str], folder: Path) -> None:
        Lmeval.count += 1
        folder.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.out_path = folder / f"lmeval-{Lmeval.count}.out"
        self.err_path = folder / f"lmeval-{Lmeval.count}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen([sys.executable, "-m", "lmeval", *args], env=env, cwd=folder,
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          preexec_fn=_restore_signals)
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self.ended: float | None = None

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def transcript(self) -> str:
        return f"$ lmeval {' '.join(self.args)}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def poll(self) -> int | None:
        code = self.popen.poll()
        if code is not None and self.ended is None:
            self.ended = time.monotonic()
        return code

    def wait(self, timeout: float = 300) -> int:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"lmeval still running after {timeout} s\n{self.transcript()}") from None
        self.poll()
        return self.popen.returncode

    def wait_stderr(self, pattern: str, timeout: float = 120) -> re.Match:
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.stderr)
            if match:
                return match
            if self.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no stderr line like {pattern!r}\n{self.transcript()}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """PREDICATE's first true value; a failed assertion naming WHAT if none came in time."""
    value = poll_until(predicate, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
    return value


def leftovers(work_dirs: list[Path], owners: list[int] = ()) -> list[psutil.Process]:
    """Live processes lmeval tagged for a run in WORK_DIRS, or whose owner is one of OWNERS."""
    runs = {run.name for work in work_dirs if work.is_dir() for run in work.iterdir()}
    owner_pids = {str(pid) for pid in owners}
    return processes_where(lambda env: (TAG_ENV in env or RUN_ENV in env)
                           and (env.get(RUN_ENV) in runs or owner_pid(env) in owner_pids))


def describe(processes: list[psutil.Process]) -> str:
    lines = []
    for process in processes:
        try:
            lines.append(f"{process.pid} {' '.join(process.cmdline())[:160]}")
        except psutil.Error:
            lines.append(f"{process.pid} (gone)")
    return "\n".join(lines)


class Reaper:
    """What one test started; `reap` kills it all (after the test's own assertions)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Lmeval] = []
        self.work_dirs: list[Path] = []

    def start(self, args: list[str], env: dict[str, str] | None = None, work_dir: Path | None = None) -> Lmeval:
        if work_dir is not None and work_dir not in self.work_dirs:
            self.work_dirs.append(work_dir)
        process = Lmeval(args, env if env is not None else base_env(), self.folder)
        self.started.append(process)
        return process

    def run(self, args: list[str], env: dict[str, str] | None = None, work_dir: Path | None = None,
            timeout: float = 300) -> Lmeval:
        process = self.start(args, env, work_dir)
        process.wait(timeout)
        return process

    def leftovers(self) -> list[psutil.Process]:
        return leftovers(self.work_dirs, [p.pid for p in self.started])

    def reap(self) -> None:
        for process in self.started:
            process.kill()
        left = self.leftovers()
        for process in left:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=5)


# ---------------------------------------------------------------- run folders


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def only_run(work_dir: Path) -> Path:
    runs = [p for p in work_dir.iterdir() if re.fullmatch(r"\d{8}_\d{6}", p.name)]
    assert len(runs) == 1, runs
    return runs[0]


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under FOLDER with its content hash and mode: to prove nothing changed."""
    digest = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            digest[str(path.relative_to(folder))] = f"{hashlib.sha256(data).hexdigest()} {path.stat().st_mode:o}"
        elif path.is_dir():
            digest[str(path.relative_to(folder)) + "/"] = ""
    return digest


def copy_run(source: Path, work_dir: Path, run_id: str, original: Path) -> Path:
    """A copy of an lmeval run (SOURCE, a snapshot of ORIGINAL) under another id; the paths in
    its manifest follow it."""
    target = work_dir / run_id
    work_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, symlinks=True)
    (target / ".lmeval.lock").unlink(missing_ok=True)
    manifest_path = target / "lmeval.json"
    text = manifest_path.read_text().replace(str(original), str(target))
    manifest = json.loads(text)
    manifest["run_id"] = run_id
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return target


def stats(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/standin/stats", timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def score_rows(stdout: str) -> dict[str, list[str]]:
    """The rows of the rich results table: dataset -> [metric, score, (invalid judge replies)]."""
    rows = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|]", line)]
        cells = cells[1:-1] if len(cells) > 2 else []
        if len(cells) >= 3 and re.fullmatch(r"\d+\.\d\d|-", cells[2]):
            rows[cells[0]] = cells[1:]
    return rows


# ---------------------------------------------------------------- watching a server


STATS_SECONDS = 0.3  # between two /standin/stats polls (each leaves a line in the server log)


@dataclass
class Observation:
    pid: int | None = None
    port: int | None = None
    key: str | None = None
    listen: set[str] = field(default_factory=set)
    unauthorized_status: int | None = None
    stats: dict | None = None
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
        self._last_stats = 0.0
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
        if time.monotonic() - self._last_stats < STATS_SECONDS:
            return
        self._last_stats = time.monotonic()
        current = stats(self.seen.port)
        if current is not None:
            self.seen.stats = current
            if self.seen.unauthorized_status is None:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{self.seen.port}/v1/models", timeout=2)
                    self.seen.unauthorized_status = 200
                except urllib.error.HTTPError as error:
                    self.seen.unauthorized_status = error.code
                except OSError:
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


@dataclass
class ChainScenario:
    qa: Path
    mc: Path
    key: Path
    expected: dict[str, str]  # dataset -> score as the table shows it
    questions: dict[str, list[str]]  # dataset -> the answer-key match of each row, by index


def make_chain_scenario(folder: Path) -> ChainScenario:
    qa, mc, key, expected = write_scenario(folder, QA_ROWS, MC_ROWS)
    questions = {"trivia": [q for q, _, _ in QA_ROWS], "choices": [q for q, *_ in MC_ROWS]}
    return ChainScenario(qa, mc, key, {name: f"{score:.2f}" for name, score in expected.items()}, questions)


def chain_args(scenario: ChainScenario, work_dir: Path, *extra: str) -> list[str]:
    """`infer` arguments of the chain: target capacity 2, so answers come two at a time."""
    return [str(MODELS / "demo-chat"), "--dataset", str(scenario.qa), "--dataset", str(scenario.mc),
            "--gpus", "0", "--server-args", "--max-batch-size 2", "-w", str(work_dir), "--grace", "3",
            *TOOLS, *extra]


def judge_args(run_id: str, work_dir: Path, *extra: str) -> list[str]:
    """`judge` arguments of the chain: judge capacity 2, so its batches are 8 prompts."""
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
# The judge's threads are its capacity (2) shared by the one judged dataset; each batch holds
# JUDGE_BATCH_FACTOR times that, and OpenCompass saves the judge's replies batch by batch.
JUDGE_BATCH = 2 * JUDGE_BATCH_FACTOR
JUDGE_CRASH_AFTER = JUDGE_BATCH + 2  # dies in the middle of the second batch
assert JUDGE_CRASH_AFTER < len(QA_ROWS), "the trivia set must outlast the first batch"


def _step(reaper: Reaper, args: list[str], env: dict[str, str], work_dir: Path, run_dir: Path | None,
          role: str, run_dir_of=None) -> Step:
    process = reaper.start(args, env, work_dir)
    new_run = run_dir is None
    if new_run:  # watch it once its folder exists
        run_dir = wait_until(lambda: next(iter(run_dir_of()), None), 60, what="the run folder")
    watch = ServerWatch(run_dir, role, new_run=new_run)
    code = process.wait(300)
    seen = watch.stop()
    died = seen.died_at
    return Step(process, seen, code, process.stdout, process.stderr, process.ended - process.started,
                None if died is None else process.ended - died)


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

    1. `lmeval infer` whose target server SIGKILLs itself after 6 answers (2 at a time);
    2. `lmeval infer --reuse RUN`: sends only what step 1 did not save;
    3. `lmeval judge --reuse RUN` whose judge SIGKILLs itself after 10 replies (batches of 8);
    4. `lmeval judge --reuse RUN`: sends only the 4 prompts of the unfinished batch;
    5. `lmeval results RUN --format csv`.
    Step 3 and 4 make the judge answer "Marlowe" with neither A nor B.
    """
    if "chain" in _CHAIN:
        return _CHAIN["chain"]
    reaper = Reaper(folder / "logs")
    work_dir = folder / "out"
    scenario = make_chain_scenario(folder / "data")
    left: dict[str, list[str]] = {}
    try:
        key = {"STANDIN_ANSWER_KEY": str(scenario.key), "STANDIN_LATENCY_SECONDS": "0.25"}
        crash = _step(reaper, ["infer", *chain_args(scenario, work_dir)],
                      base_env(**key, STANDIN_CRASH_AFTER_REQUESTS=str(TARGET_CRASH_AFTER)), work_dir, None, "target",
                      run_dir_of=lambda: [p for p in work_dir.iterdir()] if work_dir.is_dir() else [])
        left["target crash"] = describe(reaper.leftovers()).splitlines()
        run_dir = only_run(work_dir)
        saved = _saved_rows(run_dir, "demo-chat")
        resume = _step(reaper, ["infer", *chain_args(scenario, work_dir, "--reuse", run_dir.name)],
                       base_env(**key), work_dir, run_dir, "target")
        left["target resume"] = describe(reaper.leftovers()).splitlines()
        snapshot = folder / "inferred-snapshot"
        shutil.copytree(run_dir, snapshot, symlinks=True)
        judge_env = {"STANDIN_ANSWER_KEY": str(scenario.key), "STANDIN_JUDGE_INVALID": INVALID_MARKER,
                     "STANDIN_LATENCY_SECONDS": "0.05"}
        judge_crash = _step(reaper, ["judge", *judge_args(run_dir.name, work_dir)],
                            base_env(**judge_env, STANDIN_CRASH_AFTER_REQUESTS=str(JUDGE_CRASH_AFTER)),
                            work_dir, run_dir, "judge")
        left["judge crash"] = describe(reaper.leftovers()).splitlines()
        tmp = run_dir / "results" / "demo-chat" / "tmp_trivia_replica0.jsonl"
        judged = len([line for line in tmp.read_text().splitlines() if line.strip()]) if tmp.exists() else 0
        judge_resume = _step(reaper, ["judge", *judge_args(run_dir.name, work_dir)], base_env(**judge_env),
                             work_dir, run_dir, "judge")
        left["judge resume"] = describe(reaper.leftovers()).splitlines()
        shown = reaper.run(["results", run_dir.name, "-w", str(work_dir), "--format", "csv"], work_dir=work_dir)
    finally:
        reaper.reap()
    chain = Chain(scenario, work_dir, run_dir, crash, saved, resume, snapshot, judge_crash, judged, judge_resume,
                  shown, left)
    _CHAIN["chain"] = chain
    return chain
