"""A GIL hold in the inference task at a wide batch costs its own length, not a pile-up: `lmeval
infer` through the real OpenCompass against the recording stand-in with 1024 slots (LMDeploy's
default on an H100) and 1536 requests in flight, one C call holding the GIL for HOLD seconds of
CPU injected into the task once it runs its request threads (bench/gil_site, as the benchmark's
section gil does). With one request thread per socket, every answer that arrives during the hold
wakes a thread that queues for the GIL, and past about 1,000 of them on 2 cores their wake-ups
take the CPU from the holder: the hold took ten times its length and the slots stood empty.

The measures are counts and ratios, not wall-clock bounds: the threads queued for the GIL during
the hold (from their wake-ups: each wakes every switch interval), the hold's wall time over its
CPU time, and the slot-seconds the server stood idle from the hold on (while prompts remained),
in holds' lengths."""

from __future__ import annotations

import json

import pytest

from toolkit import MODELS, OPENCOMPASS, REPO

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

SLOTS, PROMPTS, ANSWER_SECONDS, HOLD = 1024, 4096, 2.0, 4.0
RECORDER = REPO / "bench" / "recording_standin.py"
GIL_SITE = REPO / "bench" / "gil_site"
# Idle slot-seconds from the hold on, in holds' lengths: the hold less the 0.5 s of answers
# queued at the server, then the refill: at 1.7-3.4 ms of CPU a request a client sends a few
# hundred a second on 2 cores, 2-4 s to fill 1024 slots again (measured 2.4-3.3 on 2 shared
# cores with this client and with a thread per socket). A hold stretched tenfold loses ten.
MOST_LOST_HOLDS = 5.0
MOST_HOLD_STRETCH = 2.0  # the hold's wall / its CPU: 1 on an idle machine, 10 with the pile-up
# Threads queued for the GIL during the hold, on average (each wakes once per switch interval):
# the loop's thread and OpenCompass's few (measured 13); with a thread per socket, one per answer
# come meanwhile (measured 230, as the answers came in; past about 1,000 on 2 cores their
# wake-ups take the CPU from the holder).
MOST_GIL_WAITERS = 50


def write_dataset(path):
    rows = [{"question": f"[q{i:04d}] Pick A.", "A": "yes", "B": "no", "answer": "A"} for i in range(PROMPTS)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def slot_intervals(records) -> list[tuple[float, float]]:
    """(start, end) of every prompt the recording stand-in held a slot for."""
    events = [json.loads(line) for path in records.glob("*.jsonl") for line in path.read_text().splitlines()]
    return [(event["start"], event["end"]) for event in events if event["event"] == "prompt"]


def test_a_gil_hold_costs_its_own_length_and_the_slots_refill(tmp_path, lmeval_runner):
    data, records, hold_log, work_dir = (tmp_path / "wide.jsonl", tmp_path / "records", tmp_path / "hold.jsonl",
                                         tmp_path / "out")
    write_dataset(data)
    records.mkdir()
    env = lmeval_runner.env(STANDIN_LATENCY_SECONDS=str(ANSWER_SECONDS), BENCH_RECORD_DIR=str(records),
                            PYTHONPATH=str(GIL_SITE), BENCH_HOLD_SECONDS=str(HOLD), BENCH_HOLD_LOG=str(hold_log),
                            BENCH_HOLD_THREADS=str(SLOTS + SLOTS // 4))
    run = lmeval_runner.run("infer", str(MODELS / "demo-chat"), "--dataset", str(data), "--gpus", "0",
                            "--server-args", f"--max-batch-size {SLOTS}", "-w", str(work_dir),
                            "--lmdeploy", str(RECORDER), "--opencompass", str(OPENCOMPASS),
                            env=env, work_dir=work_dir, timeout=300)
    assert run.poll() == 0, run.transcript()

    holds = [json.loads(line) for line in hold_log.read_text().splitlines()]
    assert len(holds) == 1, holds  # once, in the inference task, with its request threads running
    hold = holds[0]
    intervals = slot_intervals(records)
    assert len(intervals) == PROMPTS
    last_handed = max(start for start, _ in intervals)
    assert hold["began"] + hold["wall_seconds"] < last_handed, "the hold ended after the last prompt was sent"
    busy = sum(max(0.0, min(end, last_handed) - max(start, hold["began"])) for start, end in intervals)
    lost_holds = (SLOTS * (last_handed - hold["began"]) - busy) / (SLOTS * hold["cpu_seconds"])
    stretch = hold["wall_seconds"] / hold["cpu_seconds"]
    print(f"the hold: {hold}; idle from its start: {lost_holds:.2f} holds")  # shown with pytest -s
    assert hold["gil_waiters"] <= MOST_GIL_WAITERS, hold
    assert stretch <= MOST_HOLD_STRETCH, hold
    assert lost_holds <= MOST_LOST_HOLDS, (lost_holds, hold)
