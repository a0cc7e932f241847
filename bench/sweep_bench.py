"""Several models in one command beside one command per model (issue 14: goal, one `lmeval run
M1 M2 M3` within 0.6 of three `lmeval run`s in a row).

Three copies of the demo model (m1, m2, m3) are evaluated on the bundled sample datasets
against stand-in servers whose judge takes 20 s to load (`STANDIN_LOAD_SECONDS_OF`), the real
OpenCompass doing the inference and the judging, model on GPU 0 and judge on GPU 1:

  one command   `lmeval run m1 m2 m3 ...`: the judge loads once, during m1's inference, and
                judges each model while the next one is inferred;
  baseline      `lmeval run m1 ...`, then m2, then m3: each loads the judge again.
  side by side  (for information) `lmeval run m1 m2 m3 --gpus 0,2,3 --tp 1 ...`: the three
                models at once, on GPUs of their own.

They are run in turn, N times each (default 1), each into a fresh work dir, timed from the
outside (wall seconds, start-up included). Prints the median of each, the ratio of the first
two medians, and exits 1 if it misses the goal.

Run it from the repository root (about 7 minutes a round on 2 CPU cores):
  .venvs/lmeval/bin/python bench/sweep_bench.py [-n N]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from cli_startup import timed

REPO = Path(__file__).resolve().parent.parent
VENVS = REPO / ".venvs"
SAMPLE = REPO / "examples" / "sample"
JUDGE_LOAD_SECONDS = 20
MODELS = ("m1", "m2", "m3")
GOAL = 0.6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1, help="runs of each (default 1)")
    parser.add_argument("--fork-server", action="store_true", help="lmeval run --fork-server, each")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lmeval-sweep-bench-"))
    keys = scratch / "keys"
    keys.mkdir()
    folders = []
    for name in MODELS:
        shutil.copytree(SAMPLE / "models" / "demo-chat", scratch / "models" / name)
        shutil.copy(SAMPLE / "answer_key.json", keys / f"{name}.json")
        folders.append(str(scratch / "models" / name))
    os.environ.update(STANDIN_ANSWER_KEY=str(keys), LMEVAL_HOME=str(VENVS),
                      STANDIN_LOAD_SECONDS_OF=json.dumps({"demo-judge": JUDGE_LOAD_SECONDS}))
    lmeval = str(VENVS / "lmeval" / "bin" / "lmeval")
    common = ["--dataset", str(SAMPLE / "capitals.jsonl"), "--dataset", str(SAMPLE / "arithmetic.jsonl"),
              "--judge-model", str(SAMPLE / "models" / "demo-judge"), "--judge-gpus", "1",
              "--judge-tp", "1", "--lmdeploy", str(REPO / "tests" / "standin" / "lmdeploy"),
              "--opencompass", str(VENVS / "opencompass" / "bin" / "opencompass")] + ["--fork-server"] * args.fork_server
    times: dict[str, list[float]] = {"one command": [], "one command per model": [],
                                     "one command, side by side (--gpus 0,2,3 --tp 1)": []}
    for run in range(args.n):
        work = scratch / f"one-{run}"
        times["one command"].append(timed([lmeval, "run", *folders, *common, "--gpus", "0", "-w", str(work)]))
        work = scratch / f"each-{run}"
        script = " && ".join(shlex.join([lmeval, "run", folder, *common, "--gpus", "0", "-w", str(work)])
                             for folder in folders)
        times["one command per model"].append(timed(["sh", "-c", script]))
        work = scratch / f"side-{run}"
        times["one command, side by side (--gpus 0,2,3 --tp 1)"].append(
            timed([lmeval, "run", *folders, *common, "--gpus", "0,2,3", "--tp", "1", "-w", str(work)]))
        print(f"bench: round {run + 1} of {args.n} done", file=sys.stderr, flush=True)
    one, each, _ = (statistics.median(times[name]) for name in times)
    print("| 3 models, judge load 20 s | median | runs |")
    print("| --- | ---: | ---: |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} s | {len(values)} |")
    print(f"\nratio one command / one per model: {one / each:.2f} (goal: at most {GOAL})")
    shutil.rmtree(scratch)
    return 0 if one / each <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
