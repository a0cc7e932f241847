#!/usr/bin/env python3
"""Benchmark of issue 5: how busy lmeval keeps the server, and what lmeval itself costs.

Runs against the project's stand-in LMDeploy server (tests/standin, through the thin recorder
bench/recording_standin.py) and the real OpenCompass, and prints one side-by-side table:

  inference   N multiple-choice prompts (distinct questions, rule-scored: no judge) against a
              server with SLOTS slots whose answer times are heavy-tailed per prompt
              (STANDIN_LATENCY_DIST=heavy, scale --scale), --repeats times through `lmeval infer`
              (lmeval's generated config, exactly as lmeval runs it), once through OpenCompass on
              that config with OpenCompass's own OpenAISDK in place of lmeval's model class, and
              once through OpenCompass with the settings of LMDeploy's own template
              (eval/config.py: OpenAISDK batch_size=32, query_per_second=10, retry=10, no
              max_workers; NumWorkerPartitioner(num_worker=8), LocalRunner(max_num_workers=16),
              OpenICLInferTask) on the same dataset config. Reported for each: the server's
              utilisation while prompts remain and the inference time over a perfect client's.
  overhead    lmeval's own time per stage: wall time minus the time it waited for servers to
              load minus OpenCompass's time; from the 1024-prompt `lmeval infer` and from an
              `lmeval run` with a small QA (judged) + MC dataset.
  overlap     the same `lmeval run` with STANDIN_LOAD_SECONDS=--load-seconds, once with the
              judge on its own GPU (it loads during inference) and once on the model's GPU
              (the model server stops before the judge starts): the wall time saved.
  replicas    throughput of `lmeval infer --replicas N`, N = 1, 2, 4, behind the real
              `lmdeploy serve proxy`, constant answer times (so the ideal is exact).
  gil         (not in the default run) lmeval's client beside today's (the plugin of --today, from
              git) at an H100's default batch size: --gil-prompts prompts on --gil-slots slots,
              1.5x in flight, OpenCompass's processes pinned to --gil-cpus (bench/gil_site, a
              sitecustomize on their PYTHONPATH, as `taskset`); --gil-repeats runs each, then one
              each with a --gil-hold s GIL hold injected into the inference task: busy share, time
              over a perfect client, and the hold's wall time.
  inflight    (not in the default run) lmeval's generated infer config, run by OpenCompass
              directly with the model's max_workers set to --inflight values. Shows what
              requests queued beyond the slots, and a garbage collector that does not stop every
              request thread for 0.3 s, do to the utilisation.

Definitions (all times wall-clock, from what the stand-in recorded per prompt):
  inference time    first prompt handed a slot -> last answer finished.
  perfect client    SLOTS slots, prompts in dataset order, each sent the moment a slot frees,
                    each holding its slot for exactly the seconds the stand-in gives its text
                    (answer_seconds of the very text the server received). Its makespan is the
                    reference; it keeps every slot busy until the last prompt is handed one.
  utilisation while prompts remain
                    busy slot-seconds / (SLOTS x window), window = first prompt handed a slot ->
                    last prompt handed a slot (after that even a perfect client drains).
  lmeval overhead   stage wall - waited for server load - OpenCompass's wall time.

Run it (about 9 minutes with the defaults on 2 CPU cores):
  .venvs/lmeval/bin/python bench/inference_bench.py
  .venvs/lmeval/bin/python bench/inference_bench.py --prompts 256 --scale 0.5   # smaller
  .venvs/lmeval/bin/python bench/inference_bench.py --sections inference        # one section
  .venvs/lmeval/bin/python bench/inference_bench.py --sections inflight --inflight 128,160
  .venvs/lmeval/bin/python bench/inference_bench.py --sections gil      # about 15 minutes
Only the Python standard library is used; lmeval, OpenCompass and the stand-in run as the
executables they are (from .venvs/ unless --lmeval/--opencompass say otherwise).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parent.parent
OPENCOMPASS_PLUGIN = ROOT / "src" / "lmeval" / "opencompass_plugin"  # what lmeval's configs import
RECORDER = ROOT / "bench" / "recording_standin.py"
GIL_SITE = ROOT / "bench" / "gil_site"  # sitecustomize: CPUs, today's plugin, a GIL hold (section gil)
MODEL = ROOT / "examples" / "sample" / "models" / "demo-chat"
JUDGE_MODEL = ROOT / "examples" / "sample" / "models" / "demo-judge"
sys.path.insert(0, str(ROOT / "tests" / "standin"))
import standin_server  # noqa: E402 - the stand-in's own latency model: answer_seconds()

PROMPT_ID = re.compile(r"\[q(\d+)\]")
LATENCY_DIST = "heavy"
TODAY = "6f146e1"  # the last commit whose client asks with one thread per request, each on its own socket
RUN_TIMEOUT = 1200.0  # seconds any one command may take before the bench gives up on it

# LMDeploy's template (InternLM/lmdeploy eval/config.py): the settings that shape the load.
TEMPLATE_OVERRIDES = """
# ---- appended by bench/inference_bench.py: the model and inference settings of LMDeploy's own
# ---- template (eval/config.py), in place of lmeval's: OpenAISDK with batch_size=32,
# ---- query_per_second=10, retry=10 and no max_workers; NumWorkerPartitioner(num_worker=8) +
# ---- LocalRunner(max_num_workers=16) + OpenICLInferTask. Kept from lmeval's model: its name,
# ---- served name, generation settings, and tokenizer_path (without it OpenAISDK downloads one).
from opencompass.models import OpenAISDK
from opencompass.partitioners import NumWorkerPartitioner
from opencompass.runners import LocalRunner
from opencompass.tasks import OpenICLInferTask

models = [
    dict(abbr=__m['abbr'], type=OpenAISDK, path=__m['path'], key=%(key)r, openai_api_base=%(base)r,
         tokenizer_path=__m['tokenizer_path'], meta_template=__m['meta_template'],
         temperature=__m['temperature'], max_out_len=__m['max_out_len'], max_seq_len=__m['max_seq_len'],
         mode=__m['mode'], retry=10, query_per_second=10, batch_size=32,
         pred_postprocessor=__m['pred_postprocessor'], run_cfg=dict(num_gpus=0), verbose=False)
    for __m in models
]

infer = dict(
    partitioner=dict(type=NumWorkerPartitioner, num_worker=8),
    runner=dict(type=LocalRunner, max_num_workers=16, retry=0, task=dict(type=OpenICLInferTask)),
)
"""


# lmeval's generated config, but with OpenCompass's own OpenAISDK as the model class: what the
# plugin class (src/lmeval/opencompass_plugin) is worth.
STOCK_CLIENT_OVERRIDES = """
# ---- appended by bench/inference_bench.py: OpenCompass's own OpenAISDK in place of lmeval's
# ---- LmevalOpenAISDK; everything else as lmeval generated it.
from opencompass.models import OpenAISDK

for __model in models:
    __model.update(type=OpenAISDK, openai_api_base=%(base)r, key=%(key)r)
    __model.pop('answers_log', None)  # lmeval's answer log: its class's own argument
"""


# ============================================================================ schedule maths


def perfect_client(durations: list[float], slots: int) -> tuple[float, float]:
    """(makespan, time the last prompt is handed a slot) of the greedy in-order client."""
    free = [0.0] * slots
    makespan = last_handed = 0.0
    for seconds in durations:
        start = heapq.heappop(free)
        last_handed = start
        heapq.heappush(free, start + seconds)
        makespan = max(makespan, start + seconds)
    return makespan, last_handed


def busy_seconds(intervals: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Slot-seconds of INTERVALS that fall within [t0, t1]."""
    return sum(max(0.0, min(end, t1) - max(start, t0)) for start, end in intervals)


def max_concurrent(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


@dataclass
class LoadReport:
    """What one client did to the server, against the perfect client on the same answer times."""

    prompts: int  # distinct prompts answered
    requests: int  # slot holdings (retries included)
    inference_seconds: float
    window_seconds: float
    utilisation: float
    perfect_seconds: float
    perfect_window_seconds: float
    peak_concurrent: int
    sleep_excess_max: float  # how far a slot holding overran its model time (stand-in timing noise)
    displacement_mean: float  # |place in the order prompts got slots - place in the dataset|, first try of each
    displacement_max: int

    @property
    def ratio(self) -> float:
        return self.inference_seconds / self.perfect_seconds


def analyse_load(records: list[dict], slots: int, scale: float, expected: int) -> LoadReport:
    """From the recorder's prompt events: utilisation, inference time and the perfect reference."""
    texts: dict[int, str] = {}
    intervals: list[tuple[float, float]] = []
    first_start: dict[int, float] = {}
    excess = 0.0
    for record in records:
        match = PROMPT_ID.search(record.get("text") or "")
        if match is None:
            raise SystemExit(f"bench: a prompt without a [qNNNN] id reached the server: {record.get('text')!r:.200}")
        index = int(match.group(1))
        texts.setdefault(index, record["text"])
        if texts[index] != record["text"]:
            raise SystemExit(f"bench: prompt {index} reached the server with two different texts")
        intervals.append((record["start"], record["end"]))
        first_start[index] = min(record["start"], first_start.get(index, record["start"]))
        model = standin_server.answer_seconds(record["text"], scale, LATENCY_DIST)
        excess = max(excess, (record["end"] - record["start"]) - model)
    if sorted(texts) != list(range(expected)):
        missing = sorted(set(range(expected)) - set(texts))
        raise SystemExit(f"bench: the server saw {len(texts)} of {expected} prompts (missing e.g. {missing[:5]})")
    durations = [standin_server.answer_seconds(texts[i], scale, LATENCY_DIST) for i in range(expected)]
    perfect, perfect_window = perfect_client(durations, slots)
    first = min(start for start, _ in intervals)
    last_handed = max(start for start, _ in intervals)
    last_end = max(end for _, end in intervals)
    window = last_handed - first
    utilisation = busy_seconds(intervals, first, last_handed) / (slots * window) if window > 0 else 1.0
    order = sorted(first_start, key=lambda i: (first_start[i], i))
    displacement = [abs(rank - index) for rank, index in enumerate(order)]
    return LoadReport(
        prompts=len(texts), requests=len(intervals), inference_seconds=last_end - first, window_seconds=window,
        utilisation=utilisation, perfect_seconds=perfect, perfect_window_seconds=perfect_window,
        peak_concurrent=max_concurrent(intervals), sleep_excess_max=excess,
        displacement_mean=sum(displacement) / len(displacement), displacement_max=max(displacement),
    )


def as_record(result: dict) -> dict:
    """A run's RESULT for the --json file: load reports as plain dicts, the config path left out."""
    return {k: v.__dict__ if isinstance(v, LoadReport) else v for k, v in result.items() if k != "config"}


# ============================================================================ processes


@dataclass
class Completed:
    argv: list[str]
    returncode: int
    started: float  # time.time() just before the process was started
    ended: float  # time.time() once it had exited
    lines: list[tuple[float, str]] = field(default_factory=list)  # (time.time(), line) of stderr+stdout

    @property
    def wall(self) -> float:
        return self.ended - self.started

    def first_line(self, pattern: str) -> float | None:
        regex = re.compile(pattern)
        return next((t for t, line in self.lines if regex.search(line)), None)


def run_timed(argv: list[str], env: dict[str, str], cwd: Path, log: Path, echo: bool) -> Completed:
    """Run ARGV, timestamping each output line as it arrives (stdout and stderr merged)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: list[tuple[float, str]] = []

    def pump() -> None:
        with open(log, "w") as handle:
            for line in proc.stdout:  # type: ignore[union-attr]
                now = time.time()
                lines.append((now, line.rstrip("\n")))
                handle.write(f"{now - started:9.3f} {line}")
                if echo:
                    sys.stderr.write(f"    {now - started:7.2f}s | {line}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # lmeval stops its servers on SIGINT
        proc.wait(timeout=60)
    ended = time.time()
    reader.join(timeout=10)
    return Completed(argv, proc.returncode, started, ended, lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandinServer:
    """A recording stand-in the bench starts itself (for the template run)."""

    def __init__(self, env: dict[str, str], slots: int, log: Path) -> None:
        self.port = free_port()
        self.key = "sk-bench-" + secrets.token_urlsafe(18)
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [str(RECORDER), "serve", "api_server", str(MODEL), "--server-name", "127.0.0.1",
                "--server-port", str(self.port), "--model-name", MODEL.name, "--max-batch-size", str(slots),
                "--api-keys", self.key]
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(log, "w")  # noqa: SIM115 - open while the server runs, closed by stop()
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: the stand-in exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("bench: the stand-in did not become healthy")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def read_records(directory: Path) -> dict[str, dict]:
    """The recorder's files, by model name: start/bound times, prompt events, and how many
    prompts each server process answered (replicas: the proxy's split)."""
    out: dict[str, dict] = {}
    for path in sorted(directory.glob("*.jsonl")):
        entry: dict = {"prompts": [], "start": None, "ready": None}
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "start":
                entry["start"], entry["model"] = event["t"], event["model"]
            elif event["event"] == "bound":
                entry["ready"] = event["t"] + event["warmup"]
            elif event["event"] == "prompt":
                entry["prompts"].append(event)
        name = entry.get("model", path.stem)
        entry["split"] = [len(entry["prompts"])]
        if name in out:  # two processes for one model: keep both sets of prompts
            out[name]["prompts"] += entry["prompts"]
            out[name]["split"] += entry["split"]
        else:
            out[name] = entry
    return out


# ============================================================================ the bench


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        widths = [max(len(str(row[i])) for row in [self.header, *self.rows]) for i in range(len(self.header))]

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

        text = [f"### {self.title}", "", line(self.header), "| " + " | ".join("-" * w for w in widths) + " |"]
        text += [line(row) for row in self.rows]
        if self.notes:
            text += [""] + self.notes
        return "\n".join(text)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work_dir).resolve() if args.work_dir else Path(tempfile.mkdtemp(prefix="lmeval-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.lmeval = Path(args.lmeval)
        self.opencompass = Path(args.opencompass)
        self.results: dict = {"settings": {k: v for k, v in vars(args).items()}}
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith(("STANDIN_", "BENCH_"))}

    # ---------------------------------------------------------------- helpers

    def say(self, text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    def env(self, record_dir: Path, **standin: str) -> dict[str, str]:
        record_dir.mkdir(parents=True, exist_ok=True)
        env = dict(self.base_env, BENCH_RECORD_DIR=str(record_dir))
        env.update({f"STANDIN_{k.upper()}": str(v) for k, v in standin.items()})
        return env

    def lmeval_cmd(self, command: str, work: Path, *extra: str) -> list[str]:
        return [str(self.lmeval), command, str(MODEL), "--lmdeploy", str(RECORDER),
                "--opencompass", str(self.opencompass), "-w", str(work), *extra]

    @staticmethod
    def run_dir(work: Path) -> Path:
        runs = sorted(p for p in work.iterdir() if (p / "lmeval.json").is_file())
        if len(runs) != 1:
            raise SystemExit(f"bench: expected one lmeval run in {work}, found {len(runs)}")
        return runs[0]

    def check(self, done: Completed, what: str) -> None:
        if done.returncode != 0:
            tail = "\n".join(line for _, line in done.lines[-30:])
            raise SystemExit(f"bench: {what} failed with exit code {done.returncode}:\n{tail}")

    # ---------------------------------------------------------------- datasets

    def mc_dataset(self, rows: int, name: str) -> Path:
        """Multiple choice, scored by rule; every question distinct and tagged [qNNNN]."""
        path = self.work / "data" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as handle:
            for i in range(rows):
                a, b = 3 + (i * 7) % 97, 5 + (i * 13) % 89
                right = a + b
                options = [right, right + 1, right - 2, right + 10]
                shift = i % 4
                options = options[shift:] + options[:shift]
                row = {"question": f"[q{i:04d}] What is {a} + {b}?",
                       **{letter: str(value) for letter, value in zip("ABCD", options)},
                       "answer": "ABCD"[options.index(right)]}
                handle.write(json.dumps(row) + "\n")
        return path

    def qa_dataset(self, rows: int, name: str) -> Path:
        path = self.work / "data" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as handle:
            handle.writelines(json.dumps({"question": f"[q{i:04d}] Name the number {i}.", "answer": str(i)}) + "\n"
                              for i in range(rows))
        return path

    # ---------------------------------------------------------------- inference: lmeval

    def run_lmeval_infer(self, dataset: Path, label: str = "lmeval_infer", slots: int | None = None,
                         prompts: int | None = None, scale: float | None = None,
                         env: dict[str, str] | None = None) -> dict:
        """`lmeval infer` of DATASET (PROMPTS rows, default --prompts) on a stand-in of SLOTS slots
        (default --slots) answering at SCALE (default --scale), with ENV added to its environment."""
        a = self.args
        slots, prompts, scale = slots or a.slots, prompts or a.prompts, scale or a.scale
        work, records = self.work / label, self.work / "records" / label
        argv = self.lmeval_cmd("infer", work, "--dataset", str(dataset), "--gpus", "0",
                               "--server-args", f"--max-batch-size {slots}")
        if a.keep_runs and work.is_dir() and any((path / "lmeval.json").is_file() for path in work.iterdir()):
            self.say(f"{label}: the finished run in {work}, read again (--keep-runs)")
            wall = None
        else:
            self.say(f"lmeval infer: {len(argv) and shlex.join(argv)}")
            done = run_timed(argv, {**self.env(records, latency_seconds=scale, latency_dist=LATENCY_DIST),
                                    **(env or {})}, ROOT, self.work / "logs" / f"{label}.log", a.verbose)
            self.check(done, "lmeval infer")
            wall = done.wall
        run_dir = self.run_dir(work)
        manifest = json.loads((run_dir / "lmeval.json").read_text())
        wall = wall if wall is not None else manifest["wall_seconds"]
        record = read_records(records)[MODEL.name]
        load = analyse_load(record["prompts"], slots, scale, prompts)
        target = manifest["servers"]["target"]
        stage = manifest["stages"]["infer"]
        overhead = infer_only_overhead(wall, manifest)
        return {"load": load, "wall": wall, "opencompass": stage["opencompass_seconds"],
                "waited": target["waited_seconds"], "overhead": overhead, "run_dir": str(run_dir),
                "readiness_lag": readiness_lag(target, record), "config": run_dir / "lmeval" / "infer_config.py"}

    # ---------------------------------------------------------------- inference: template

    def run_config(self, label: str, lmeval_config: Path, overrides: str) -> dict:
        """OpenCompass on lmeval's infer config with OVERRIDES appended (%(base)s and %(key)s filled
        in), against a recording stand-in the bench starts itself; run as lmeval runs it, with
        lmeval's OpenCompass plugin folder on PYTHONPATH."""
        a = self.args
        records = self.work / "records" / label
        server_env = self.env(records, latency_seconds=a.scale, latency_dist=LATENCY_DIST)
        server = StandinServer(server_env, a.slots, self.work / "logs" / f"{label}_server.log")
        try:
            server.wait_healthy()
            config = self.work / label / "infer_config.py"
            config.parent.mkdir(parents=True, exist_ok=True)
            text = lmeval_config.read_text() + overrides % {"base": server.base + "/v1", "key": server.key}
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the key
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            cwd = self.work / label / "opencompass_cwd"
            cwd.mkdir(parents=True, exist_ok=True)
            argv = [str(self.opencompass), str(config), "-m", "infer", "-w", str(self.work / label / "out"),
                    "-r", label]
            self.say(f"{label}: (cd {cwd} && {shlex.join(argv)})")
            env = dict(self.base_env, PYTHONPATH=os.pathsep.join(
                filter(None, [str(OPENCOMPASS_PLUGIN), self.base_env.get("PYTHONPATH")])))
            done = run_timed(argv, env, cwd,
                             self.work / "logs" / f"{label}_opencompass.log", a.verbose)
            self.check(done, f"OpenCompass ({label})")
        finally:
            server.stop()
        load = analyse_load(read_records(records)[MODEL.name]["prompts"], a.slots, a.scale, a.prompts)
        return {"load": load, "opencompass": done.wall}

    def run_template(self, lmeval_config: Path) -> dict:
        return self.run_config("template", lmeval_config, TEMPLATE_OVERRIDES)

    def run_stock_client(self, lmeval_config: Path) -> dict:
        return self.run_config("stock_openaisdk", lmeval_config, STOCK_CLIENT_OVERRIDES)

    def section_inference(self) -> list[Section]:
        a = self.args
        dataset = self.mc_dataset(a.prompts, "bench_mc")
        runs = []
        for number in range(1, a.repeats + 1):
            ours = self.run_lmeval_infer(dataset, "lmeval_infer" if number == 1 else f"lmeval_infer_{number}")
            self.say(f"lmeval run {number} of {a.repeats}: {fmt_load(ours['load'])}")
            runs.append(ours)
        self.results["lmeval_infer_runs"] = [as_record(run) for run in runs]
        self.results["lmeval_infer"] = self.results["lmeval_infer_runs"][0]
        worst = min(runs, key=lambda run: run["load"].utilisation)
        stock = self.run_stock_client(runs[0]["config"])
        self.results["stock_openaisdk"] = as_record(stock)
        self.say(f"stock OpenAISDK: {fmt_load(stock['load'])}")
        theirs = self.run_template(runs[0]["config"])
        self.results["template"] = as_record(theirs)
        self.say(f"template: {fmt_load(theirs['load'])}")
        mine, plain, tmpl = worst["load"], stock["load"], theirs["load"]
        if len({round(r.perfect_seconds, 6) for r in (mine, plain, tmpl)}) > 1:
            self.say("warning: the runs sent different prompt texts; each is compared to its own perfect client")
        loads = (mine, plain, tmpl)

        def row(label: str, show: Callable[[LoadReport], str], perfect: str) -> list[str]:
            return [label, *(show(load) for load in loads), perfect]

        rows = [
            row("server busy while prompts remain", lambda r: pct(r.utilisation), "100.0%"),
            row("inference time (first prompt in -> last answer out)", lambda r: secs(r.inference_seconds),
                secs(mine.perfect_seconds)),
            row("inference time / perfect client", lambda r: f"{r.ratio:.2f}x", "1.00x"),
            row("window while prompts remain", lambda r: secs(r.window_seconds), secs(mine.perfect_window_seconds)),
            row("most prompts in slots at once", lambda r: str(r.peak_concurrent), str(a.slots)),
            row("out of dataset order (mean / max places)",
                lambda r: f"{r.displacement_mean:.1f} / {r.displacement_max}", "0 / 0"),
            row("requests (prompts + retries)", lambda r: str(r.requests), str(a.prompts)),
            ["OpenCompass wall, start-up included", secs(worst["opencompass"]), secs(stock["opencompass"]),
             secs(theirs["opencompass"]), "-"],
        ]
        passed = [run["load"].utilisation >= 0.95 and run["load"].ratio <= 1.10 for run in runs]
        each = ", ".join(f"{pct(run['load'].utilisation)} / {run['load'].ratio:.3f}x" for run in runs)
        notes = [(f"{a.prompts} prompts, {a.slots}-slot stand-in, heavy-tailed answer times "
                  f"(STANDIN_LATENCY_DIST=heavy, scale {a.scale:g} s: per prompt {a.scale * 0.36:.2f}-"
                  f"{a.scale * standin_server.HEAVY_MAX_FACTOR:.1f} s, mean {a.scale:g} s)."),
                 (f"`lmeval infer` ran {a.repeats} times (busy / time over perfect: {each}); the table shows the "
                  f"least busy run. Target (>= 95% busy, <= 1.10x perfect) in every run: "
                  f"{'PASS' if all(passed) else f'FAIL ({passed.count(False)} of {a.repeats} runs missed it)'}."),
                 ("Stock OpenAISDK: lmeval's generated config with OpenCompass's own `OpenAISDK` in place of "
                  "lmeval's `LmevalOpenAISDK` (requests through one event loop, frozen garbage collector)."),
                 ("The template's load depends on the CPU count: each of its 8 task processes sends batches "
                  "of 32 through OpenAISDK's default thread pool, min(32, 2 x (CPUs + 5)) threads "
                  f"({min(32, 2 * ((os.cpu_count() or 1) + 5))} here), at most 10 requests/s.")]
        return [Section("Inference: lmeval's generated config vs LMDeploy's template settings",
                        ["", "lmeval (least busy run)", "lmeval config, stock OpenAISDK", "LMDeploy template",
                         "perfect client"], rows, notes)]

    # ---------------------------------------------------------------- in-flight sweep (optional)

    def lmeval_config(self) -> Path:
        """lmeval's infer config for the bench dataset: the inference section's, else a dry run's."""
        done = self.results.get("lmeval_infer")
        if done:
            return Path(done["run_dir"]) / "lmeval" / "infer_config.py"
        dataset = self.mc_dataset(self.args.prompts, "bench_mc")
        work = self.work / "lmeval_dry_run"
        argv = self.lmeval_cmd("infer", work, "--dataset", str(dataset), "--gpus", "0",
                               "--server-args", f"--max-batch-size {self.args.slots}", "--dry-run")
        self.check(run_timed(argv, dict(self.base_env), ROOT, self.work / "logs" / "dry_run.log", False),
                   "lmeval infer --dry-run")
        return self.run_dir(work) / "lmeval" / "infer_config.py"

    def section_inflight(self) -> list[Section]:
        """lmeval's config with the model's max_workers (requests kept in flight) set to other
        values than the server's slots: what headroom beyond the slots buys."""
        a = self.args
        config = self.lmeval_config()
        rows = []
        for count in a.inflight:
            overrides = ("\n# ---- appended by bench/inference_bench.py: requests in flight\n"
                         "for __model in models:\n"
                         "    __model.update(openai_api_base=%(base)r, key=%(key)r, "
                         f"max_workers={count}, batch_size={count}, query_per_second={max(1000, count)})\n")
            label = f"inflight_{count}"
            result = self.run_config(label, config, overrides)
            load = result["load"]
            self.results[label] = {"load": load.__dict__, "opencompass": result["opencompass"]}
            self.say(f"max_workers={count}: {fmt_load(load)}")
            rows.append([f"{count} ({count / a.slots:.3g}x slots)", pct(load.utilisation), secs(load.inference_seconds),
                         f"{load.ratio:.3f}x", str(load.peak_concurrent),
                         f"{load.displacement_mean:.1f} / {load.displacement_max}", secs(result["opencompass"])])
        notes = ["Same dataset and stand-in as the inference section; lmeval's generated infer config with only "
                 "max_workers/batch_size changed, run by OpenCompass directly."]
        title = "Requests in flight (lmeval's config, max_workers varied)"
        return [Section(title,
                        ["max_workers", "busy while prompts remain", "inference time", "/ perfect",
                         "most in slots", "out of order (mean / max)", "OpenCompass wall"], rows, notes)]

    # ---------------------------------------------------------------- gil: an H100's batch size, 2 CPUs

    def today_plugin(self) -> Path:
        """lmeval's OpenCompass plugin as of --today (git), for BENCH_PLUGIN: today's client."""
        folder = self.work / "today_plugin"
        if not folder.exists():
            folder.mkdir(parents=True)
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", self.args.today,
                                      str(OPENCOMPASS_PLUGIN.relative_to(ROOT))], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
        return folder / OPENCOMPASS_PLUGIN.relative_to(ROOT)

    def run_gil(self, dataset: Path, client: str, number: int, hold: float = 0.0) -> dict:
        """`lmeval infer` at --gil-slots with the OpenCompass processes on --gil-cpus (bench/gil_site),
        CLIENT 'lmeval' (this tree's) or 'today' (--today's), HOLD seconds of GIL held once in the
        inference task."""
        a = self.args
        label = f"gil_{client}_{'hold' if hold else 'run'}_{number}"
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(GIL_SITE), self.base_env.get("PYTHONPATH")])),
               "BENCH_CPUS": a.gil_cpus}
        if client == "today":
            env["BENCH_PLUGIN"] = str(self.today_plugin())
        hold_log = self.work / "logs" / f"{label}_hold.jsonl"
        if hold:
            env.update(BENCH_HOLD_SECONDS=str(hold), BENCH_HOLD_LOG=str(hold_log),
                       BENCH_HOLD_THREADS=str(int(a.gil_slots * 0.9)))
        run = self.run_lmeval_infer(dataset, label, slots=a.gil_slots, prompts=a.gil_prompts, scale=a.gil_scale,
                                    env=env)
        if hold:
            holds = [json.loads(line) for line in hold_log.read_text().splitlines()] if hold_log.exists() else []
            if len(holds) != 1:
                raise SystemExit(f"bench: {label}: expected one GIL hold in the inference task, saw {len(holds)}")
            run["hold"] = holds[0]
        self.say(f"{label}: {fmt_load(run['load'])}" + (f"; hold {run['hold']}" if hold else ""))
        return run

    def section_gil(self) -> list[Section]:
        """lmeval's client beside today's at an H100's default batch size (1024 slots, 1.5x in
        flight), the OpenCompass processes pinned to 2 CPUs; --gil-repeats runs each, interleaved,
        then one each with a GIL hold of --gil-hold s injected into the inference task."""
        a = self.args
        dataset = self.mc_dataset(a.gil_prompts, "bench_gil")
        clients = ("lmeval", "today")
        runs: dict[str, list[dict]] = {client: [] for client in clients}
        for number in range(1, a.gil_repeats + 1):
            for client in clients:
                runs[client].append(self.run_gil(dataset, client, number))
        held = {client: self.run_gil(dataset, client, 1, hold=a.gil_hold) for client in clients}
        self.results["gil"] = {client: {"runs": [as_record(run) for run in runs[client]],
                                        "hold": as_record(held[client])} for client in clients}
        least = {client: min(runs[client], key=lambda run: run["load"].utilisation) for client in clients}
        slowest = {client: max(runs[client], key=lambda run: run["load"].ratio) for client in clients}
        perfect = least["lmeval"]["load"]
        rows = [
            ["server busy while prompts remain (least busy run)",
             *(pct(least[c]["load"].utilisation) for c in clients), "100.0%"],
            ["inference time (slowest run)", *(secs(slowest[c]["load"].inference_seconds) for c in clients),
             secs(perfect.perfect_seconds)],
            ["inference time / perfect client (slowest run)", *(f"{slowest[c]['load'].ratio:.2f}x" for c in clients),
             "1.00x"],
            ["most prompts in slots at once (least busy run)", *(str(least[c]["load"].peak_concurrent) for c in clients),
             str(a.gil_slots)],
            ["OpenCompass wall, start-up included (least busy run)",
             *(secs(least[c]["opencompass"]) for c in clients), "-"],
            [f"a {a.gil_hold:g} s GIL hold: its wall time", *(secs(held[c]["hold"]["wall_seconds"]) for c in clients),
             secs(a.gil_hold)],
            ["  its CPU time", *(secs(held[c]["hold"]["cpu_seconds"]) for c in clients), secs(a.gil_hold)],
            ["  threads queued for the GIL meanwhile (mean)", *(f"{held[c]['hold']['gil_waiters']:.0f}" for c in clients),
             "0"],
            ["  load average (1 min) just after it", *(f"{held[c]['hold']['load_average_1m']:.0f}" for c in clients),
             "-"],
            ["  the run's inference time / perfect client", *(f"{held[c]['load'].ratio:.2f}x" for c in clients),
             f"{(perfect.perfect_seconds + a.gil_hold) / perfect.perfect_seconds:.2f}x"],
        ]
        every = {c: ", ".join(f"{pct(r['load'].utilisation)} / {r['load'].ratio:.3f}x" for r in runs[c])
                 for c in clients}
        met = all(r["load"].utilisation >= 0.95 and r["load"].ratio <= 1.10 for r in runs["lmeval"])
        notes = [f"{a.gil_prompts} prompts, {a.gil_slots}-slot stand-in (LMDeploy's default --max-batch-size on "
                 f"H100/H200), heavy-tailed answer times (scale {a.gil_scale:g} s: what 2 CPUs can send), "
                 f"{int(a.gil_slots * 1.5)} requests "
                 f"in flight; OpenCompass's processes pinned to CPUs {a.gil_cpus} (bench/gil_site, as `taskset`). "
                 f"Today's client: lmeval's plugin as of {a.today} (one request thread each on its own socket).",
                 f"Each ran {a.gil_repeats} times, interleaved (busy / time over perfect): lmeval {every['lmeval']}; "
                 f"today's {every['today']}. Target (>= 95% busy, <= 1.10x perfect in every run): "
                 f"{'PASS' if met else 'FAIL'}.",
                 f"The hold: one C call holding the GIL for {a.gil_hold:g} s of CPU, injected into the inference task "
                 f"{a.gil_slots * 9 // 10}+ threads in; perfect with the hold: the server idle for the hold's "
                 "length. Target: the hold's wall time at most ~20 s."]
        return [Section(f"An H100's batch size on 2 CPUs: {a.gil_slots} slots, {a.gil_prompts} prompts",
                        ["", "lmeval", "today's client", "perfect client"], rows, notes)]

    # ---------------------------------------------------------------- overhead and overlap

    def run_small(self, label: str, judge_gpus: str) -> dict:
        a = self.args
        work, records = self.work / f"run_{label}", self.work / "records" / f"run_{label}"
        qa, mc = self.qa_dataset(a.small_rows, "small_qa"), self.mc_dataset(a.small_rows, "small_mc")
        argv = self.lmeval_cmd("run", work, "--dataset", str(qa), "--dataset", str(mc), "--gpus", "0",
                               "--judge-model", str(JUDGE_MODEL), "--judge-gpus", judge_gpus, "--judge-tp", "1")
        self.say(f"lmeval run ({label}): STANDIN_LOAD_SECONDS={a.load_seconds:g} {shlex.join(argv)}")
        done = run_timed(argv, self.env(records, load_seconds=a.load_seconds), ROOT,
                         self.work / "logs" / f"run_{label}.log", a.verbose)
        self.check(done, f"lmeval run ({label})")
        manifest = json.loads((self.run_dir(work) / "lmeval.json").read_text())
        recs = read_records(records)
        stages = run_overheads(done, manifest)
        return {"wall": done.wall, "stages": stages, "manifest_wall": manifest.get("wall_seconds"),
                "readiness_lag": {role: readiness_lag(manifest["servers"][role], recs.get(server["served_name"], {}))
                                  for role, server in manifest["servers"].items()}}

    def section_overhead(self) -> list[Section]:
        a = self.args
        disjoint = self.run_small("disjoint", "1")
        overlapping = self.run_small("overlapping", "0")
        self.results["run_disjoint"], self.results["run_overlapping"] = disjoint, overlapping
        measured: list[tuple[str, dict]] = []
        infer = self.results.get("lmeval_infer")
        if infer:
            measured.append((f"infer ({a.prompts} prompts, `lmeval infer`)", infer["overhead"]))
        for label, result in (("judge on its own GPU", disjoint), ("judge on the model's GPU", overlapping)):
            for stage, o in result["stages"].items():
                measured.append((f"{stage} (`lmeval run`, {label})", o))
        rows = [[label, secs(o["wall"]), secs(o["waited"]), secs(o["opencompass"]), secs(o["overhead"])]
                for label, o in measured]
        worst = max(o["overhead"] for _, o in measured)
        lags = [lag for r in (disjoint, overlapping) for lag in r["readiness_lag"].values() if lag is not None]
        if infer and infer.get("readiness_lag") is not None:
            lags.append(infer["readiness_lag"])
        notes = [(f"`lmeval run`: {a.small_rows} QA rows (judged) + {a.small_rows} MC rows, each server loading "
                  f"{a.load_seconds:g} s. A run's wall is split where lmeval reports the target server stopped: "
                  "infer carries lmeval's start-up and the target's stop, eval the judge's stop and the scores."),
                 f"Worst stage overhead {worst:.2f} s (target < 2 s per stage: {'PASS' if worst < 2 else 'FAIL'}). "
                 + (f"lmeval saw each server ready at most {max(lags):.2f} s after it was (counted in 'waited')."
                    if lags else "")]
        overhead = Section("lmeval's own overhead per stage (wall - waited for server load - OpenCompass)",
                           ["stage", "wall", "waited for server load", "OpenCompass", "lmeval overhead"], rows, notes)
        def outside(result: dict) -> float:  # the run's wall time outside OpenCompass
            return result["wall"] - sum(o["opencompass"] for o in result["stages"].values())

        saved = overlapping["wall"] - disjoint["wall"]
        saved_outside = outside(overlapping) - outside(disjoint)
        self.results["overlap_saved_seconds"] = {"wall": saved, "outside_opencompass": saved_outside}
        overlap_rows = [
            ["judge on its own GPU (--judge-gpus 1): loads during inference", secs(disjoint["wall"]),
             secs(outside(disjoint)), secs(disjoint["stages"]["eval"]["waited"])],
            ["judge on the model's GPU (--judge-gpus 0): loads after inference", secs(overlapping["wall"]),
             secs(outside(overlapping)), secs(overlapping["stages"]["eval"]["waited"])],
            ["time saved by overlapped loading", secs(saved), secs(saved_outside), ""],
        ]
        overlap = Section("Overlapped loading (`lmeval run`, same datasets)",
                          ["", "wall", "wall outside OpenCompass", "waited for the judge"], overlap_rows,
                          [(f"Each server takes {a.load_seconds:g} s to load (STANDIN_LOAD_SECONDS) plus 0.3 s of "
                            "warm-up in both runs. OpenCompass's own time varies by a few seconds from run to run "
                            "on 2 cores; the time outside OpenCompass is the steadier measure of what overlapping "
                            "saves.")])
        return [overhead, overlap]

    # ---------------------------------------------------------------- replicas (hook)

    def section_replicas(self) -> list[Section]:
        """Throughput of `lmeval infer` with 1, 2 and 4 replicas (tp 1, one GPU id each) behind
        the real `lmdeploy serve proxy`: --replica-prompts prompts, --replica-slots slots per
        replica, every answer --replica-seconds long (constant, so the ideal is exact)."""
        a = self.args
        dataset = self.mc_dataset(a.replica_prompts, "bench_replicas")
        rows, base = [], None
        for count in (1, 2, 4):
            work, records = self.work / f"replicas_{count}", self.work / "records" / f"replicas_{count}"
            argv = self.lmeval_cmd("infer", work, "--dataset", str(dataset), "--tp", "1", "--replicas", str(count),
                                   "--gpus", ",".join(str(i) for i in range(count)),
                                   "--server-args", f"--max-batch-size {a.replica_slots}")
            env = self.env(records, latency_seconds=a.replica_seconds, latency_dist="const")
            env["STANDIN_REAL_LMDEPLOY"] = str(ROOT / ".venvs" / "lmdeploy" / "bin" / "lmdeploy")
            self.say(f"replicas {count}: {shlex.join(argv)}")
            self.check(run_timed(argv, env, ROOT, self.work / "logs" / f"replicas_{count}.log", a.verbose),
                       f"lmeval infer --replicas {count}")
            record = read_records(records)[MODEL.name]
            prompts = record["prompts"]
            span = max(p["end"] for p in prompts) - min(p["start"] for p in prompts)
            ideal = a.replica_prompts / (a.replica_slots * count) * a.replica_seconds
            throughput = len(prompts) / span
            base = base or throughput
            split = sorted(record["split"], reverse=True)
            rounds = math.ceil(split[0] / a.replica_slots)  # of the replica sent the most
            rows.append([str(count), str(len(prompts)), "/".join(map(str, split)), secs(span), secs(ideal),
                         secs(rounds * a.replica_seconds), f"{throughput:.1f}/s", f"{throughput / base:.2f}x"])
            self.results[f"replicas_{count}"] = {"prompts": len(prompts), "split": split, "span": span,
                                                 "throughput": throughput}
        notes = [f"{a.replica_prompts} multiple-choice prompts through `lmeval infer --replicas N`, each replica a "
                 f"stand-in with {a.replica_slots} slots answering in {a.replica_seconds:g} s, behind the real "
                 "`lmdeploy serve proxy` (min_expected_latency routing). Time: first prompt in a slot -> last answer; "
                 "ideal: prompts / (slots x N) x answer time. Target: 2 replicas >= 1.8x one.",
                 "Per replica: the prompts the proxy sent each. Answers take a constant time, so a replica "
                 "answers in rounds of its slots, and one prompt over the even split adds a whole round: "
                 "ideal for the split: the rounds of the replica sent the most x answer time."]
        return [Section("Replicas behind LMDeploy's proxy",
                        ["replicas", "prompts", "per replica", "inference time", "ideal", "ideal for the split",
                         "throughput", "vs 1 replica"], rows, notes)]

    SECTIONS: ClassVar[dict[str, Callable[[Bench], list[Section]]]] = {}

    def run(self, names: list[str]) -> list[Section]:
        out: list[Section] = []
        for name in names:
            out += Bench.SECTIONS[name](self)
        return out


Bench.SECTIONS = {"inference": Bench.section_inference, "overhead": Bench.section_overhead,
                  "replicas": Bench.section_replicas, "inflight": Bench.section_inflight, "gil": Bench.section_gil}


# ============================================================================ overhead accounting


def infer_only_overhead(wall: float, manifest: dict) -> dict:
    waited = manifest["servers"]["target"]["waited_seconds"]
    oc = manifest["stages"]["infer"]["opencompass_seconds"]
    return {"wall": wall, "waited": waited, "opencompass": oc, "overhead": wall - waited - oc}


def run_overheads(done: Completed, manifest: dict) -> dict[str, dict]:
    """Split `lmeval run`'s wall at the moment the target server was stopped."""
    stages = manifest["stages"]
    boundary = done.first_line(r"stopped target server") or stages["infer"]["ended"]
    servers = manifest["servers"]
    out = {}
    for stage, role, t0, t1 in (("infer", "target", done.started, boundary), ("eval", "judge", boundary, done.ended)):
        wall = t1 - t0
        waited = servers[role]["waited_seconds"] if role in servers else 0.0
        oc = stages[stage]["opencompass_seconds"]
        out[stage] = {"wall": wall, "waited": waited, "opencompass": oc, "overhead": wall - waited - oc}
    return out


def readiness_lag(server: dict, record: dict) -> float | None:
    """How long lmeval went on waiting after the server was really ready (bound + warm-up): the
    part of 'waited' that is lmeval's polling, not the server's loading."""
    ready = record.get("ready")
    if ready is None or server.get("started") is None or server.get("ready_seconds") is None:
        return None
    noticed = server["started"] + server["ready_seconds"]
    return max(0.0, min(noticed - ready, server.get("waited_seconds") or 0.0))


# ============================================================================ output


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def secs(x: float) -> str:
    return f"{x:.2f} s"


def fmt_load(r: LoadReport) -> str:
    return (f"busy {pct(r.utilisation)} over {secs(r.window_seconds)}, inference {secs(r.inference_seconds)} "
            f"= {r.ratio:.2f}x perfect ({secs(r.perfect_seconds)}), peak {r.peak_concurrent}, "
            f"{r.requests} requests, slot overrun <= {r.sleep_excess_max * 1000:.0f} ms")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=1024, help="prompts in the inference dataset (default 1024)")
    p.add_argument("--slots", type=int, default=128, help="the stand-in's --max-batch-size (default 128)")
    p.add_argument("--repeats", type=int, default=3,
                   help="section inference: how many times `lmeval infer` runs (default 3)")
    p.add_argument("--replica-prompts", type=int, default=512, help="section replicas: prompts (default 512)")
    p.add_argument("--replica-slots", type=int, default=32, help="section replicas: slots per replica (default 32)")
    p.add_argument("--replica-seconds", type=float, default=1.0,
                   help="section replicas: seconds every answer takes (default 1)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="STANDIN_LATENCY_SECONDS: mean answer time in seconds (default 1.0)")
    p.add_argument("--small-rows", type=int, default=16, help="rows per dataset of the `lmeval run`s (default 16)")
    p.add_argument("--load-seconds", type=float, default=5.0,
                   help="STANDIN_LOAD_SECONDS of the `lmeval run`s (default 5)")
    p.add_argument("--sections", default="inference,overhead,replicas",
                   help=f"comma-separated, from {','.join(Bench.SECTIONS)} (default: inference,overhead,replicas)")
    p.add_argument("--inflight", default="",
                   help="section inflight: comma-separated max_workers values (default: 1, 1.125, 1.25, 1.5 "
                        "and 2 times --slots)")
    p.add_argument("--gil-slots", type=int, default=1024, help="section gil: the stand-in's slots (default 1024)")
    p.add_argument("--gil-prompts", type=int, default=8192, help="section gil: prompts (default 8192)")
    p.add_argument("--gil-scale", type=float, default=4.0,
                   help="section gil: mean answer time in seconds (default 4: 256 answers/s at 1024 slots)")
    p.add_argument("--gil-repeats", type=int, default=3, help="section gil: runs of each client (default 3)")
    p.add_argument("--gil-hold", type=float, default=15.0,
                   help="section gil: seconds of GIL held once in the inference task (default 15)")
    p.add_argument("--gil-cpus", default="0,1", help="section gil: the CPUs OpenCompass runs on (default 0,1)")
    p.add_argument("--today", default=TODAY,
                   help=f"section gil: the git revision whose plugin is today's client (default {TODAY})")
    p.add_argument("--keep-runs", action="store_true",
                   help="with -w: read again each `lmeval infer` already finished there instead of running it "
                        "(a table printed again after a later run failed)")
    p.add_argument("-w", "--work-dir", help="keep everything here (default: a new temporary folder)")
    p.add_argument("--json", help="also write the measurements to this file")
    p.add_argument("--lmeval", default=str(ROOT / ".venvs" / "lmeval" / "bin" / "lmeval"))
    p.add_argument("--opencompass", default=str(ROOT / ".venvs" / "opencompass" / "bin" / "opencompass"))
    p.add_argument("-v", "--verbose", action="store_true", help="echo lmeval's and OpenCompass's output")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = [n for n in names if n not in Bench.SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; pick from {', '.join(Bench.SECTIONS)}")
    args.section_names = names
    factors = (1, 1.125, 1.25, 1.5, 2)
    args.inflight = ([int(x) for x in args.inflight.split(",") if x.strip()] if args.inflight
                     else sorted({max(1, round(args.slots * f)) for f in factors}))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repeat = shlex.join([sys.executable, str(Path(__file__).relative_to(ROOT) if Path(__file__).is_relative_to(ROOT)
                                             else __file__), *(sys.argv[1:] if argv is None else argv)])
    bench = Bench(args)
    bench.say(f"work folder {bench.work}")
    began = time.time()
    sections = bench.run(args.section_names)
    total = time.time() - began
    print(f"## lmeval inference benchmark (stand-in server, {os.cpu_count()} CPU cores)\n")
    for section in sections:
        print(section.markdown() + "\n")
    print(f"Bench wall time {total:.0f} s. Repeat with: `{repeat}`")
    if args.json:
        Path(args.json).write_text(json.dumps(bench.results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
