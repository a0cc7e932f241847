"""Judging that streams behind inference beside judging after inference (issue 14: goal, a
streamed run within 10% of max(inference, judging)).

One model, a suite of four judged datasets that finish at different times (SIZES prompts,
inferred in that order), stand-in servers with 2 requests in flight each: the model takes
LATENCY seconds an answer, the judge JUDGE_LATENCY (a verdict is a few tokens, an answer many),
model on GPU 0 and judge on GPU 1, the real OpenCompass:

  streamed     `lmeval run ...`: each dataset is judged once its predictions are complete;
  after        `lmeval run ... --no-stream`: the judge starts judging when inference has ended.

Each is run N times (default 1), in turn, into fresh work dirs. From each run's manifest: for
`--no-stream`, the inference stage's and the eval stage's seconds; for the streamed run, from
the start of its inference stage to the end of its eval stage (the judging after inference
included). The servers' load is in neither. Prints the medians, and the streamed run beside
max(inference, judging) of the other; exits 1 if the ratio misses the goal.

The stages last minutes, as real ones do. What streaming cannot hide is the eval stage after
the last dataset: its OpenCompass start-up (half a minute on 2 busy cores with new processes,
the default; a second or two with --fork-server) and the judging of the datasets that finished too
late to be judged meanwhile. `--fork-server` runs both with it.

Run it from the repository root (about 10 minutes a pair on 2 CPU cores):
  .venvs/lmeval/bin/python bench/streaming_bench.py [-n N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from cli_startup import timed

REPO = Path(__file__).resolve().parent.parent
VENVS = REPO / ".venvs"
SAMPLE = REPO / "examples" / "sample"
SIZES = {"first": 240, "second": 160, "third": 80, "last": 16}
LATENCY = "1.0"
JUDGE_LATENCY = "0.25"
GOAL = 1.10


def write_suite(folder: Path) -> list[str]:
    """The datasets (question i of each answered right when i is odd) and the model's key."""
    folder.mkdir(parents=True)
    key, arguments = [], []
    for name, size in SIZES.items():
        rows = [(f"{name} question {i:03d}: what is {i} times 3?", str(3 * i)) for i in range(size)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                                                      for q, a in rows))
        key += [{"match": q, "reply": a if i % 2 else "no idea"} for i, (q, a) in enumerate(rows)]
        arguments += ["--dataset", str(folder / f"{name}.jsonl")]
    (folder / "key.json").write_text(json.dumps(key))
    return arguments


def manifest_stages(work_dir: Path) -> dict[str, dict]:
    [run_dir] = [path for path in work_dir.iterdir() if path.is_dir()]
    return json.loads((run_dir / "lmeval.json").read_text())["stages"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1, help="runs of each (default 1)")
    parser.add_argument("--fork-server", action="store_true", help="lmeval run --fork-server, both")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lmeval-streaming-bench-"))
    datasets = write_suite(scratch / "data")
    os.environ.update(STANDIN_ANSWER_KEY=str(scratch / "data" / "key.json"), STANDIN_LATENCY_SECONDS=LATENCY,
                      STANDIN_LATENCY_SECONDS_OF=json.dumps({"demo-judge": float(JUDGE_LATENCY)}),
                      LMEVAL_HOME=str(VENVS))
    command = [str(VENVS / "lmeval" / "bin" / "lmeval"), "run", str(SAMPLE / "models" / "demo-chat"), *datasets,
               "--gpus", "0", "--server-args", "--max-batch-size 2", "--judge-model",
               str(SAMPLE / "models" / "demo-judge"), "--judge-gpus", "1", "--judge-tp", "1",
               "--judge-server-args", "--max-batch-size 2", "--lmdeploy", str(REPO / "tests" / "standin" / "lmdeploy"),
               "--opencompass", str(VENVS / "opencompass" / "bin" / "opencompass")] + ["--fork-server"] * args.fork_server
    streamed: list[float] = []
    after: dict[str, list[float]] = {"infer": [], "eval": []}
    for run in range(args.n):
        work = scratch / f"streamed-{run}"
        timed([*command, "-w", str(work)])
        stages = manifest_stages(work)
        streamed.append(stages["eval"]["ended"] - stages["infer"]["started"])
        work = scratch / f"after-{run}"
        timed([*command, "--no-stream", "-w", str(work)])
        stages = manifest_stages(work)
        for name in after:
            after[name].append(stages[name]["seconds"])
        print(f"bench: pair {run + 1} of {args.n} done", file=sys.stderr, flush=True)
    infer, judge = statistics.median(after["infer"]), statistics.median(after["eval"])
    both = statistics.median(streamed)
    print(f"| suite {', '.join(map(str, SIZES.values()))} prompts, {LATENCY} s an answer, {JUDGE_LATENCY} s a verdict "
          "| inference + judging (median) |")
    print("| --- | ---: |")
    print(f"| --no-stream: inference | {infer:.1f} s |")
    print(f"| --no-stream: judging | {judge:.1f} s |")
    print(f"| --no-stream: both | {infer + judge:.1f} s |")
    print(f"| streamed: both | {both:.1f} s |")
    ratio = both / max(infer, judge)
    print(f"\nstreamed / max(inference, judging): {ratio:.2f} (goal: at most {GOAL}); "
          f"streamed / their sum: {both / (infer + judge):.2f}; {len(streamed)} runs of each")
    shutil.rmtree(scratch)
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
