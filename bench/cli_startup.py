"""How fast do `lmeval --help` and `lmeval results` answer? (issue 5: under 0.3 s each)

First makes one real run to show results of: `scripts/demo` (the stand-in servers and the real
OpenCompass, about a minute) into a temporary work dir, or uses `-w DIR` if it already holds a
run with scores. Then times each command N times (default 20) as a user runs it, the installed
`lmeval` script in .venvs/lmeval, output to a pipe, beside the anchor: the same venv's bare
Python start-up (`python -c pass`), which no command can beat. Prints the median and max of
each, the ratio of the medians to the anchor's, and exits 1 if a max misses 0.3 s.

Run it from the repository root: `.venvs/lmeval/bin/python bench/cli_startup.py [-n N] [-w DIR]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venvs" / "lmeval" / "bin"
GOAL_SECONDS = 0.3


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return elapsed


def interleaved_times(commands: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """Seconds of each command's RUNS runs, after one warm-up run each (page and bytecode
    caches), interleaved so a busy moment of the machine hits every command alike."""
    for argv in commands.values():
        timed(argv)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            times[name].append(timed(argv))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="runs of each command (default 20)")
    parser.add_argument("-w", "--work-dir", help="a work dir that already holds a run with scores")
    args = parser.parse_args()
    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="lmeval-cli-bench-"))
    if not args.work_dir:
        print(f"bench: making a run with scores in {work_dir} (scripts/demo)", file=sys.stderr, flush=True)
        subprocess.run([str(REPO / "scripts" / "demo"), "-w", str(work_dir)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lmeval = str(VENV_BIN / "lmeval")
    commands = {
        "python -c pass (anchor)": [str(VENV_BIN / "python"), "-c", "pass"],
        "lmeval --help": [lmeval, "--help"],
        "lmeval results": [lmeval, "results", "-w", str(work_dir)],
        "lmeval results --format json": [lmeval, "results", "-w", str(work_dir), "--format", "json"],
    }
    times = interleaved_times(commands, args.n)
    anchor = statistics.median(times["python -c pass (anchor)"])
    print(f"| command | median | max | median / anchor | under {GOAL_SECONDS:g} s |")
    print("| --- | ---: | ---: | ---: | --- |")
    missed = []
    for name, values in times.items():
        median, worst = statistics.median(values), max(values)
        verdict = "-" if "anchor" in name else ("yes" if worst < GOAL_SECONDS else "NO")
        if verdict == "NO":
            missed.append(name)
        print(f"| `{name}` | {median:.3f} s | {worst:.3f} s | {median / anchor:.1f}x | {verdict} |")
    print(f"\n{args.n} runs of each, interleaved. Repeat with: `.venvs/lmeval/bin/python bench/cli_startup.py "
          f"-n {args.n} -w {work_dir}`")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
