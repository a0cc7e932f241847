"""Put on PYTHONPATH by bench/inference_bench.py (section gil) only: what it does to the
OpenCompass processes of an `lmeval infer` (Pythons that can import opencompass; lmeval and the
stand-in are left alone), as environment variables ask:

  BENCH_CPUS=0,1          pin the process to these CPUs (as `taskset -c 0,1` would): a client
                          limited to a few CPUs, as Slurm's --cpus-per-task or a container is
  BENCH_PLUGIN=DIR        import lmeval's OpenCompass plugin from DIR, ahead of the one lmeval
                          puts on PYTHONPATH: today's client, from git, beside the new one
  BENCH_HOLD_SECONDS=S    once the process runs BENCH_HOLD_THREADS threads (the inference task's
                          request threads; default 1000) and 2 s more (forked or not), hold the GIL for S seconds
                          of CPU in one C call (a modular power, as a full garbage collection or a
                          slow C call would), and append to BENCH_HOLD_LOG one JSON line: the
                          hold's CPU and wall seconds, the threads, the 1-minute load average after,
                          and how many threads queued for the GIL meanwhile on average (their
                          wake-ups: a queued thread wakes once per switch interval, 5 ms)
"""
import importlib.util
import json
import os
import sys
import threading
import time

MODULUS = (1 << 4096) + 1


def _hold_cpu(bits):
    """One C call that holds the GIL: BITS squarings of a 4096-bit number."""
    return pow(3, (1 << bits) - 1, MODULUS)


def _bits_for(seconds):
    """The exponent bits that take SECONDS of CPU here, measured on a short call."""
    bits = 20_000
    while True:
        began = time.thread_time()
        _hold_cpu(bits)
        took = time.thread_time() - began
        if took > 0.05:
            return max(1, int(bits * seconds / took))
        bits *= 4


def _wakeups():
    """Voluntary context switches of each of this process's threads but the calling one."""
    counts = {}
    for tid in os.listdir("/proc/self/task"):
        if int(tid) == threading.get_native_id():
            continue
        try:
            with open(f"/proc/self/task/{tid}/status", encoding="ascii") as status:
                counts[tid] = int(next(line for line in status if line.startswith("voluntary_ctxt_switches")).split()[1])
        except (OSError, StopIteration):  # a thread that ended meanwhile
            pass
    return counts


def _hold_when_busy(bits, threads, log_path):
    while threading.active_count() < threads:
        time.sleep(0.1)
    time.sleep(2.0)
    running = threading.active_count()
    before = _wakeups()
    began, cpu, wall = time.time(), time.thread_time(), time.monotonic()
    _hold_cpu(bits)
    cpu, wall = time.thread_time() - cpu, time.monotonic() - wall
    after = _wakeups()
    wakeups = sum(after[tid] - before[tid] for tid in after.keys() & before.keys())
    line = {"pid": os.getpid(), "began": began, "cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3),
            "threads": running, "load_average_1m": os.getloadavg()[0],
            # a thread queued for the GIL wakes once per switch interval: how many queued, on average
            "gil_waiters": round(wakeups / (wall / sys.getswitchinterval()), 1)}
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")


def _setup():
    if importlib.util.find_spec("opencompass") is None:
        return
    if os.environ.get("BENCH_CPUS"):
        os.sched_setaffinity(0, {int(cpu) for cpu in os.environ["BENCH_CPUS"].split(",")})
    if os.environ.get("BENCH_PLUGIN"):
        sys.path.insert(0, os.environ["BENCH_PLUGIN"])
    if os.environ.get("BENCH_HOLD_SECONDS"):
        args = (_bits_for(float(os.environ["BENCH_HOLD_SECONDS"])), int(os.environ.get("BENCH_HOLD_THREADS", "1000")),
                os.environ["BENCH_HOLD_LOG"])

        def watch():
            threading.Thread(target=_hold_when_busy, args=args, name="bench-gil-hold", daemon=True).start()

        watch()
        os.register_at_fork(after_in_child=watch)  # a task forked by --fork-server


_setup()
