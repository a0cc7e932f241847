#!/usr/bin/env python3
"""The project's stand-in ``lmdeploy`` (tests/standin), recording what the benchmark needs.

Use it wherever the stand-in goes (``lmeval --lmdeploy bench/recording_standin.py``, or
``bench/recording_standin.py serve api_server MODEL ...`` directly): same command line, same
behaviour, same answers and latencies. When ``BENCH_RECORD_DIR`` is set, each server process
appends JSON lines to ``$BENCH_RECORD_DIR/<model-name>.<pid>.jsonl`` as things happen (so the
record survives however the server is stopped):

  {"event": "start", "t": T, "model": NAME}                  process start (wall clock)
  {"event": "bound", "t": T, "warmup": W}                     port bound; /health is 200 from T+W
  {"event": "prompt", "arrived": A, "start": S, "end": E, "text": TEXT}
        one prompt: A when its request had been read, S..E the time it held a slot

``text`` is the text the stand-in's latency model hashes (``answer_seconds(text, ...)``): the
last user message as the client sent it. The stand-in's own ``/standin/stats`` has the
intervals but not which prompt each belongs to, which the perfect-client reference needs.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time

STARTED = time.time()
HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests', 'standin'))

import standin_server as ss  # noqa: E402 - from tests/standin, put on the path above


class Recorder:
    def __init__(self, directory: str | None, model: str):
        self.handle = None
        self.lock = threading.Lock()
        if directory:
            safe = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in model) or 'model'
            path = os.path.join(directory, f'{safe}.{os.getpid()}.jsonl')
            self.handle = open(path, 'a', encoding='utf-8', buffering=1)  # noqa: SIM115 - process lifetime

    def write(self, **entry) -> None:
        if self.handle is None:
            return
        line = json.dumps(entry, ensure_ascii=False)
        with self.lock:
            self.handle.write(line + '\n')


def _model_name(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg in ('--model-name', '--model_name') and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(('--model-name=', '--model_name=')):
            return arg.split('=', 1)[1]
    return os.path.basename(argv[2].rstrip('/')) if len(argv) > 2 else 'model'


_local = threading.local()


def install(recorder: Recorder) -> None:
    """Wrap the stand-in's prompt handling, bind and interval list; its logic stays its own."""
    run_prompt = ss.Handler._run_prompt

    def _run_prompt(self, text, *args, **kwargs):
        _local.text = text
        _local.arrived = time.time()
        try:
            return run_prompt(self, text, *args, **kwargs)
        finally:
            _local.text = None

    ss.Handler._run_prompt = _run_prompt

    class Intervals(list):
        def append(self, item):
            recorder.write(event='prompt', arrived=getattr(_local, 'arrived', None), start=item[0], end=item[1],
                           text=getattr(_local, 'text', None))
            super().append(item)

    reset = ss.Stats.reset

    def _reset(self):
        reset(self)
        with self.lock:
            self.intervals = Intervals(self.intervals)

    ss.Stats.reset = _reset

    activate = ss.Server.server_activate

    def _activate(self):
        activate(self)
        recorder.write(event='bound', t=time.time(), warmup=ss._env_float('STANDIN_WARMUP_SECONDS', 0.3))

    ss.Server.server_activate = _activate


def main() -> int:
    argv = sys.argv[1:]
    if argv[:2] == ['serve', 'api_server']:
        recorder = Recorder(os.environ.get('BENCH_RECORD_DIR'), _model_name(argv))
        recorder.write(event='start', t=STARTED, model=_model_name(argv))
        install(recorder)
    return ss.main(argv)


if __name__ == '__main__':
    sys.exit(main())
