"""Stand-in for ``lmdeploy serve api_server`` (LMDeploy 0.18) -- stdlib only.

Used by the tests of ``lmeval`` on machines without a GPU.  The executable
``tests/standin/lmdeploy`` calls :func:`main`; tests and benchmarks can
import this module (``sys.path.insert(0, "<repo>/tests/standin")`` then
``import standin_server``) to use :func:`answer_seconds`,
:func:`parse_worker_pids`, :func:`build_cli_parser` and friends.

Command line (same parser shape as the real 0.18 CLI; every flag of the real
``serve api_server`` parser is accepted, most are ignored)::

    lmdeploy serve api_server MODEL_PATH [--server-name 0.0.0.0]
        [--server-port 23333] [--tp 1] [--api-keys K ...] [--model-name NAME]
        [--max-batch-size 128] [--proxy-url URL] [--backend B]
        [--session-len N] [--log-level L] [... all other real flags ...]
    lmdeploy -v | --version          -> prints "0.18.0+standin"

Implemented flags: --server-name, --server-port, --tp, --api-keys,
--model-name (default MODEL_PATH), --max-batch-size (default 128; the real
default depends on the GPU), --proxy-url, --backend, --role (only for the
proxy registration body, with --backend pytorch), --allow-terminate-by-client
(GET /terminate), --session-len (below) and --log-level (parsed, no effect).
Unknown flags: argparse error, exit 2 (like the real parser).  Underscore
spellings (``--server_port``) and dotted dict flags (``--hf-overrides.a.b 1``)
are accepted like the real ``FlexibleArgumentParser``.

``lmdeploy serve proxy ...`` is not stood in: it runs on a CPU, so the stand-in execs the
real LMDeploy named by STANDIN_REAL_LMDEPLOY with the same arguments.

Environment variables (the real CLI has no such flags):

  STANDIN_LOAD_SECONDS       "model loading" time before the port is bound
                             (default 0.5).  The port is NOT open meanwhile.
  STANDIN_LOAD_SECONDS_OF    JSON {"model name": seconds}: the load time of
                             those models (e.g. a slow judge beside quick
                             targets); the others take STANDIN_LOAD_SECONDS.
  STANDIN_WARMUP_SECONDS     after binding, GET /health answers 503
                             {"status": "initializing", ...} for this long
                             (default 0.3), then 200 {"status": "healthy"}.
                             Other routes work normally during warm-up.
  STANDIN_ANSWER_KEY         path of a JSON list [{"match": "substring",
                             "reply": "text"}, ...]; the reply of the FIRST
                             entry whose match occurs in the last user message
                             (chat) / the prompt (completions) is returned.
                             A folder: the key is FOLDER/<model name>.json
                             (a key per model; none if that file is absent).
                             An entry may give "replies": [text, ...] instead
                             of "reply": the k-th prompt of this process that
                             matches it gets replies[k % len] (a question asked
                             n times then gets each reply n / len times).
                             "tokens": N (or a list beside "replies") makes the
                             answer N tokens long, as a reasoning model's is:
                             "<think> thinking ... </think> REPLY" (a token is
                             a whitespace-separated word, as `usage` counts
                             them). An answer over the request's max_tokens is
                             cut there, with finish_reason "length": its
                             reply is then lost, as a cut answer's is.
  STANDIN_DEFAULT_REPLY      reply when nothing matches (default
                             "I don't know.").
  STANDIN_JUDGE_INVALID      comma-separated markers; in judge mode, if the
                             predicted answer contains one of them the reply
                             is "I cannot judge this." (neither A nor B).
  STANDIN_LATENCY_SECONDS    per-answer generation time scale (default 0).
  STANDIN_LATENCY_SECONDS_OF JSON {"model name": seconds}: the scale of those
                             models (e.g. a judge quicker than its targets);
                             the others take STANDIN_LATENCY_SECONDS.
  STANDIN_LATENCY_DIST       "const" (default; factor 1) or "heavy"
                             (deterministic heavy-tailed factor, mean 1, see
                             answer_seconds()).
  STANDIN_CRASH_DURING_LOAD  "1": after the load time print a fake traceback
                             ending in "RuntimeError: CUDA out of memory
                             (stand-in)" to stderr and exit 1 (an uncaught
                             exception, as in the real server), before binding.
                             Model names, comma-separated: only those crash.
  STANDIN_CRASH_AFTER_REQUESTS  N: after the N-th chat/completions response of
                             this process has been sent, the process kills
                             itself with SIGKILL (exit status -9 / shell 137,
                             like the OOM killer); in-flight requests get no
                             answer.  Counted per process, not reset by
                             POST /standin/reset.
  STANDIN_CRASH_AFTER_REQUESTS_OF  JSON {"model name": N}: the same for those
                             models only (e.g. the judge, not its targets).
  STANDIN_CRASH_ONCE         path: with STANDIN_CRASH_AFTER_REQUESTS, a process
                             that reaches N crashes only if no file is there,
                             and creates it as it dies: one crash among all
                             the servers that share the setting (a server
                             started again after it runs on).
  STANDIN_HANG_AFTER_REQUESTS  N: after the N-th chat/completions response of
                             this process the engine hangs, as a stuck LMDeploy
                             scheduler does: every request after it is accepted
                             and never answered, and GET /health answers 503
                             "unhealthy" once STANDIN_HANG_UNHEALTHY_AFTER
                             seconds (default 1; LMDeploy's is 90) have passed.
  STANDIN_HANG_AFTER_REQUESTS_OF  JSON {"model name": N}: for those models only.
  STANDIN_HANG_ONCE          path: as STANDIN_CRASH_ONCE, one hang among the
                             servers sharing the setting (a restarted one runs on).
  STANDIN_WORKER_MAX_SECONDS safety net: tp workers exit by themselves after
                             this many seconds (default 900).
  STANDIN_SHUTDOWN_TIMEOUT   max seconds a graceful shutdown waits for
                             in-flight requests (default 30).
  STANDIN_REQUEST_LOG        path: the JSON body of every chat/completions
                             request is appended to it, one line each.

--session-len N: as LMDeploy 0.18, a prompt of N tokens or more is refused
with HTTP 400 (`Input length (P) must be smaller than the model context length
(N).`, type invalid_request_error), and an answer is cut where prompt and
answer reach N (finish_reason "length").

Judge mode (automatic, checked before the answer key): if the last user
message contains OpenCompass's grader markers
``<Gold Target Begin>: \\n...\\n<Gold Target End>`` and
``<Predicted Answer Begin>: \\n...\\n<Predicted End>`` (also
``<Predicted Answer End>``, and the academic variant ``<Standard Answer
Begin>``/``<Candidate's Answer Begin>``), the reply is "A" if the normalized
gold equals the normalized prediction (strip, casefold, collapse whitespace,
strip trailing ``.,!?``), else "B" (or the invalid reply, see above).

Startup, as in real LMDeploy + uvicorn 0.54:
  * with --tp N>1, N worker processes are started first (``lmdeploy
    --standin-worker K``); stdout gets ``INFO: started worker K pid P``.
    Worker 0 runs in its own session (setsid), worker 1 ignores SIGTERM and
    SIGINT.  They are NOT stopped when the server exits.
  * load (STANDIN_LOAD_SECONDS), HINT lines, ``INFO:     Started server
    process [PID]``, ``Waiting for application startup.``, proxy
    registration (real 0.18 registers in the lifespan hook, i.e. BEFORE the
    port is bound), ``Application startup complete.``, bind.
  * port taken: ``ERROR:    [Errno 98] error while attempting to bind on
    address ('127.0.0.1', P): address already in use`` on stderr, exit 3
    (uvicorn's STARTUP_FAILURE).
  * ``INFO:     Uvicorn running on http://HOST:PORT (Press CTRL+C to quit)``.
  * SIGTERM / SIGINT: graceful shutdown (in-flight requests finish), then
    SIGTERM is re-raised with the default handler (exit status -15, like
    uvicorn 0.54 which re-raises captured signals) and SIGINT ends with exit
    status 0.  Worker processes are left running.

HTTP API (http.server, HTTP/1.1 keep-alive):
  GET  /health               503 during warm-up, then 200 (never needs a key)
  GET  /metrics              Prometheus text as LMDeploy 0.16+ serves it (with
                             --api-keys only with a key, as LMDeploy 0.18's):
                             lmdeploy:num_requests_running (requests received and
                             not answered), lmdeploy:num_requests_waiting (0) and
                             lmdeploy:generation_tokens_total (words of replies sent); 404 with
                             --disable-metrics
  GET  /v1/models            model list (like the real ModelList)
  POST /v1/chat/completions  OpenAI chat, non-streaming or "stream": true (SSE)
  POST /v1/completions       OpenAI completions, "prompt" string or list
  GET  /terminate            like the real one (needs --allow-terminate-by-client)
  GET  /standin/stats        counters, no key needed (see Stats.snapshot)
  POST /standin/reset        zero the counters, no key needed
With --api-keys, every path except those starting with /health, /docs,
/redoc, /nodes (the real skip list) and /standin needs
``Authorization: Bearer KEY``; otherwise 401 with the real body
``{"message": "Unauthorized.", "type": "authentication_error", "code": 401,
"param": null, "object": "error"}``.
A request whose "model" is not the served model name gets 404
``{"message": "The model 'X' does not exist.", "type": "not_found_error",
"code": 404, "param": null, "object": "error"}``.

Capacity: at most --max-batch-size prompts are "generated" at once (FIFO
queue beyond that).  Each prompt holds its slot for
answer_seconds(text, STANDIN_LATENCY_SECONDS, STANDIN_LATENCY_DIST).

Proxy (--proxy-url URL), as real 0.18 ``register_to_proxy``: one
``POST URL/nodes/add`` with headers ``accept: application/json``,
``Content-Type: application/json`` and the body
``{"url": "http://SERVER_NAME:SERVER_PORT", "status": {"models":
[MODEL_NAME], "role": ROLE}}`` -- SERVER_NAME is --server-name verbatim
(so 0.0.0.0 by default), ROLE is 1 (Hybrid; 2/3 for --backend pytorch
--role Prefill/Decode).  No API key is sent (the proxy and the server both
skip auth for /nodes*).  On failure stdout gets lmdeploy's
``... - lmdeploy - ERROR - ... - Service registration failed: ...`` and the
server keeps going.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import http.server
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from typing import Any

VERSION = '0.18.0+standin'
REAL_VERSION = '0.18.0'
DEFAULT_PORT = 23333
DEFAULT_MAX_BATCH_SIZE = 128
DEFAULT_REPLY = "I don't know."
INVALID_JUDGE_REPLY = 'I cannot judge this.'
CRASH_MESSAGE = 'RuntimeError: CUDA out of memory (stand-in)'
WORKER_FLAG = '--standin-worker'
HERE = os.path.dirname(os.path.abspath(__file__))
EXECUTABLE = os.path.join(HERE, 'lmdeploy')
# path prefixes the real AuthenticationMiddleware lets through (+ /standin)
TOKEN_STEP_SECONDS = 0.1  # how often a long answer's tokens are counted
AUTH_SKIP_PREFIXES = ('/health', '/docs', '/redoc', '/nodes', '/standin')  # LMDeploy 0.18's, and the stand-in's own

# ---------------------------------------------------------------------------
# latency model
# ---------------------------------------------------------------------------
HEAVY_ALPHA = 1.5          # Pareto shape: heavy tail, finite mean
HEAVY_CAP = 20.0           # raw factor cap (before normalisation)


def _heavy_norm(alpha: float = HEAVY_ALPHA, cap: float = HEAVY_CAP) -> float:
    """E[min(X, cap)] for X ~ Pareto(alpha, xm) with xm = (alpha-1)/alpha
    (so that E[X] = 1 without the cap)."""
    xm = (alpha - 1.0) / alpha
    # E[min(X,c)] = E[X] - int_c^inf P(X>x) dx = 1 - xm^a * c^(1-a) / (a-1)
    return 1.0 - xm ** alpha * cap ** (1.0 - alpha) / (alpha - 1.0)


_HEAVY_NORM = _heavy_norm()
HEAVY_MAX_FACTOR = HEAVY_CAP / _HEAVY_NORM


def prompt_uniform(prompt_text: str) -> float:
    """Deterministic u in (0, 1) from sha256(prompt_text)."""
    digest = hashlib.sha256(prompt_text.encode('utf-8')).digest()
    n = int.from_bytes(digest[:8], 'big')
    return (n + 0.5) / 2.0 ** 64


def latency_factor(prompt_text: str, dist: str = 'const') -> float:
    """Multiplier of the latency scale for one prompt.

    ``const``: 1.  ``heavy``: a Pareto(alpha=1.5) inverse CDF of
    u = prompt_uniform(prompt_text), capped at 20 and renormalised so the
    mean over random prompts is exactly 1; range [~0.36, ~21.9].
    """
    if dist in (None, '', 'const'):
        return 1.0
    if dist != 'heavy':
        raise ValueError(f'unknown STANDIN_LATENCY_DIST {dist!r} (const|heavy)')
    u = prompt_uniform(prompt_text)
    xm = (HEAVY_ALPHA - 1.0) / HEAVY_ALPHA
    x = xm / (1.0 - u) ** (1.0 / HEAVY_ALPHA)
    return min(x, HEAVY_CAP) / _HEAVY_NORM


def answer_seconds(prompt_text: str, scale: float, dist: str = 'const') -> float:
    """Seconds a prompt holds its generation slot in the stand-in.

    ``prompt_text`` is the text the server matches on: the content of the
    last user message (chat) or the prompt string (completions).
    ``scale`` is STANDIN_LATENCY_SECONDS, ``dist`` STANDIN_LATENCY_DIST.
    """
    if not scale:
        return 0.0
    return float(scale) * latency_factor(prompt_text, dist)


# ---------------------------------------------------------------------------
# answers and judging
# ---------------------------------------------------------------------------
_JUDGE_PATTERNS = [
    (re.compile(r'<Gold Target Begin>\s*:?\s*(.*?)\s*<Gold Target End>', re.S),
     re.compile(r'<Predicted Answer Begin>\s*:?\s*(.*?)\s*<Predicted(?: Answer)? End>', re.S)),
    (re.compile(r'<Standard Answer Begin>\s*:?\s*(.*?)\s*<Standard Answer End>', re.S),
     re.compile(r"<Candidate's Answer Begin>\s*:?\s*(.*?)\s*<Candidate's Answer End>", re.S)),
]


def normalize_answer(text: str) -> str:
    """strip, casefold, collapse whitespace, strip trailing ``.,!?``."""
    s = ' '.join(str(text).casefold().split())
    while True:
        t = s.rstrip('.,!?').rstrip()
        if t == s:
            return s
        s = t


def extract_judge_fields(text: str) -> tuple[str, str] | None:
    """(gold, predicted) if ``text`` is an OpenCompass grader prompt."""
    for gold_re, pred_re in _JUDGE_PATTERNS:
        g = gold_re.search(text)
        p = pred_re.search(text)
        if g and p:
            return g.group(1), p.group(1)
    return None


def long_answer(reply: str, tokens: int) -> str:
    """REPLY at the end of an answer of TOKENS tokens, the rest reasoning (none if it is longer)."""
    thinking = tokens - 2 - count_tokens(reply)
    return reply if thinking < 0 or not tokens else ' '.join(['<think>', *['thinking'] * thinking, '</think>', reply])


def token_limit(max_tokens: int | None, session_len: int | None, prompt_tokens: int) -> int | None:
    """Where an answer stops: at the request's max_tokens, or where prompt and answer fill the session."""
    limits = [limit for limit in (max_tokens, None if session_len is None else session_len - prompt_tokens)
              if limit is not None]
    return min(limits) if limits else None


def cut(answer: str, limit: int | None) -> tuple[str, str]:
    """ANSWER as a server that stops at LIMIT tokens sends it, and its finish reason."""
    words = answer.split()
    if limit is not None and len(words) > limit:
        return ' '.join(words[:limit]), 'length'
    return answer, 'stop'


def judge_reply(gold: str, predicted: str, invalid_markers: list[str]) -> str:
    if any(m and m in predicted for m in invalid_markers):
        return INVALID_JUDGE_REPLY
    return 'A' if normalize_answer(gold) == normalize_answer(predicted) else 'B'


def own_setting(variable: str, model_name: str, default: float) -> float:
    """VARIABLE, or MODEL_NAME's own in VARIABLE_OF (JSON {"model name": value})."""
    own = json.loads(os.environ.get(f'{variable}_OF') or '{}')
    name = os.path.basename(model_name)
    return float(own[name]) if name in own else _env_float(variable, default)


def load_seconds(model_name: str) -> float:
    return own_setting('STANDIN_LOAD_SECONDS', model_name, 0.5)


def answer_key_path(model_name: str) -> str | None:
    """STANDIN_ANSWER_KEY, or in the folder it names the key of MODEL_NAME (none if absent)."""
    path = os.environ.get('STANDIN_ANSWER_KEY')
    if path and os.path.isdir(path):
        path = os.path.join(path, f'{os.path.basename(model_name)}.json')
        return path if os.path.isfile(path) else None
    return path


def load_answer_key(path: str | None) -> list[dict]:
    if not path:
        return []
    with open(path, encoding='utf-8') as f:
        data = json.load(f)
    def valid(entry) -> bool:
        if not isinstance(entry, dict) or not isinstance(entry.get('match'), str):
            return False
        replies = entry.get('replies', [entry.get('reply')])
        tokens = entry.get('tokens', 0)
        tokens = tokens if isinstance(tokens, list) else [tokens] * len(replies) if isinstance(replies, list) else []
        return (isinstance(replies, list) and bool(replies) and all(isinstance(r, str) for r in replies)
                and len(tokens) == len(replies) and all(isinstance(t, int) for t in tokens))

    if not isinstance(data, list) or not all(valid(e) for e in data):
        raise ValueError(f'{path}: the answer key must be a JSON list of '
                         '{"match": str, "reply": str} or {"match": str, "replies": [str, ...]}')
    return data


class Answerer:
    """Decides the reply for one prompt text."""

    def __init__(self, answer_key: list[dict], default_reply: str,
                 invalid_markers: list[str]):
        self.answer_key = answer_key
        self.default_reply = default_reply
        self.invalid_markers = invalid_markers
        self.asked = collections.Counter()  # entry index -> prompts that matched it so far
        self.lock = threading.Lock()

    def answer(self, text: str) -> tuple[str, str, str | None]:
        """Return (reply, kind, match) with kind in judge|key|default."""
        fields = extract_judge_fields(text)
        if fields is not None:
            return judge_reply(fields[0], fields[1], self.invalid_markers), 'judge', None
        for index, entry in enumerate(self.answer_key):
            if entry['match'] in text:
                replies = entry.get('replies', [entry.get('reply')])
                with self.lock:
                    turn = self.asked[index]
                    self.asked[index] += 1
                tokens = entry.get('tokens', 0)
                tokens = tokens[turn % len(tokens)] if isinstance(tokens, list) else tokens
                return long_answer(replies[turn % len(replies)], tokens), 'key', entry['match']
        return self.default_reply, 'default', None


# ---------------------------------------------------------------------------
# command line (mirrors the real 0.18 parser's shape)
# ---------------------------------------------------------------------------
def _parse(x):
    """--quant-policy converter (same name and rules as the real one)."""
    aliases = {'none': 0, 'int4': 4, 'int8': 8, 'fp8': 16, 'fp8_e5m2': 17,
               'turbo_quant': 42, 'fp8_e4m3': 16}
    key = x.lower()
    if key in aliases:
        return aliases[key]
    v = int(x)
    if v not in (0, 4, 8, 16, 17, 42):
        raise ValueError(f'invalid quant_policy: {x!r}')
    return v


_LOG_LEVELS = ['CRITICAL', 'FATAL', 'ERROR', 'WARN', 'WARNING', 'INFO', 'DEBUG', 'NOTSET', 'REQUEST']
S, I, F, J = str, int, float, json.loads  # noqa: E741 - one letter per type keeps the table readable
# (flag, nargs or 0 for store_true, type, choices, default); order as in the
# real parser.  Generated from and checked against api_server_flags_0.18.txt.
_API_SERVER_FLAGS: list[tuple] = [
    ('--server-name', None, S, None, '0.0.0.0'),
    ('--server-port', None, I, None, None),
    ('--allow-origins', '+', S, None, ['*']),
    ('--allow-credentials', 0, None, None, False),
    ('--allow-methods', '+', S, None, ['*']),
    ('--allow-headers', '+', S, None, ['*']),
    ('--proxy-url', None, S, None, None),
    ('--max-concurrent-requests', None, I, None, None),
    ('--allowed-media-domains', '+', S, None, None),
    ('--backend', None, S, ['pytorch', 'turbomind'], 'turbomind'),
    ('--log-level', None, S, _LOG_LEVELS, 'WARNING'),
    ('--api-keys', '*', S, None, None),
    ('--ssl', 0, None, None, False),
    ('--model-name', None, S, None, None),
    ('--max-log-len', None, I, None, None),
    ('--disable-fastapi-docs', 0, None, None, False),
    ('--allow-terminate-by-client', 0, None, None, False),
    ('--enable-abort-handling', 0, None, None, False),
    ('--trust-remote-code', 0, None, None, False),
    ('--chat-template', None, S, None, None),
    ('--tool-call-parser', None, S, None, None),
    ('--reasoning-parser', None, S, None, None),
    ('--revision', None, S, None, None),
    ('--download-dir', None, S, None, None),
    ('--generation-config', None, S, None, 'auto'),
    ('--adapters', '*', S, None, None),
    ('--device', None, S, ['cuda', 'ascend', 'maca', 'camb'], 'cuda'),
    ('--eager-mode', 0, None, None, False),
    ('--empty-init', 0, None, None, False),
    ('--logprobs-mode', None, S, [None, 'raw_logits', 'raw_logprobs'], None),
    ('--dllm-block-length', None, I, None, None),
    ('--dllm-unmasking-strategy', None, S,
     ['low_confidence_dynamic', 'low_confidence_static', 'sequential'], 'low_confidence_dynamic'),
    ('--dllm-denoising-steps', None, I, None, None),
    ('--dllm-confidence-threshold', None, F, None, 0.85),
    ('--enable-return-routed-experts', 0, None, None, False),
    ('--distributed-executor-backend', None, S, ['uni', 'mp', 'ray'], None),
    ('--kernel-block-size', None, I, None, -1),
    ('--prefix-cache-state-budget', None, I, None, 0),
    ('--prefix-cache-decode-state-interval', None, I, None, 0),
    ('--language-model-only', 0, None, None, False),
    ('--dtype', None, S, ['auto', 'float16', 'bfloat16'], 'auto'),
    ('--tp', None, I, None, 1),
    ('--session-len', None, I, None, None),
    ('--max-batch-size', None, I, None, None),   # None -> DEFAULT_MAX_BATCH_SIZE
    ('--cache-max-entry-count', None, F, None, 0.8),
    ('--num-gpu-blocks', None, I, None, 0),
    ('--cache-block-seq-len', None, I, None, 64),
    ('--enable-prefix-caching', 0, None, None, False),
    ('--max-prefill-token-num', None, I, None, 8192),
    ('--quant-policy', None, _parse, None, 0),
    ('--model-format', None, S, ['hf', 'awq', 'gptq', 'compressed-tensors', 'fp8', 'mxfp4'], None),
    ('--hf-overrides', None, J, None, None),
    ('--disable-metrics', 0, None, None, False),
    ('--dp', None, I, None, 1),
    ('--ep', None, I, None, 1),
    ('--enable-microbatch', 0, None, None, False),
    ('--enable-eplb', 0, None, None, False),
    ('--role', None, S, ['Hybrid', 'Prefill', 'Decode'], 'Hybrid'),
    ('--migration-backend', None, S, ['DLSlime', 'Mooncake'], 'DLSlime'),
    ('--cudagraph-capture-batch-sizes', '+', I, None, None),
    ('--piecewise-cudagraph-max-tokens', None, I, None, None),
    ('--node-rank', None, I, None, 0),
    ('--nnodes', None, I, None, 1),
    ('--cp', None, I, None, 1),
    ('--rope-scaling-factor', None, F, None, 0.0),
    ('--num-tokens-per-iter', None, I, None, 0),
    ('--max-prefill-iters', None, I, None, 1),
    ('--async', None, I, [0, 1], 1),
    ('--communicator', None, S, ['nccl', 'native', 'cuda-ipc'], 'nccl'),
    ('--moe-a2a-backend', None, S, ['auto', 'default', 'deepep'], 'auto'),
    ('--dist-init-addr', None, S, None, None),
    ('--vision-max-batch-size', None, I, None, 1),
    ('--speculative-algorithm', None, S,
     ['eagle', 'eagle3', 'deepseek_mtp', 'hy3_mtp', 'qwen3_5_mtp', 'dflash'], None),
    ('--speculative-draft-model', None, S, None, None),
    ('--speculative-num-draft-tokens', None, I, None, 1),
    ('--speculative-dflash-block-size', None, I, None, None),
    ('--kv-transfer-config', None, J, None, None),
]
_DEST_OVERRIDES = {'--async': 'async_'}


class FlexibleArgumentParser(argparse.ArgumentParser):
    """Port of lmdeploy.cli.utils.FlexibleArgumentParser (underscores in
    flag names become dashes; ``--a.b.c v`` becomes ``--a '{"b": {"c": v}}'``)."""

    def parse_args(self, args=None, namespace=None):
        if args is None:
            args = sys.argv[1:]
        pattern = re.compile(r'(?<=--)[^\.]*')

        def repl(match):
            return match.group(0).replace('_', '-')

        processed = []
        for arg in args:
            if arg.startswith('--'):
                if '=' in arg:
                    key, value = arg.split('=', 1)
                    processed.append(f'{pattern.sub(repl, key, count=1)}={value}')
                else:
                    processed.append(pattern.sub(repl, arg, count=1))
            elif arg.startswith('-O') and arg != '-O' and len(arg) == 2:
                processed.append('-O')
                processed.append(arg[2:])
            else:
                processed.append(arg)

        def try_convert(value):
            try:
                return json.loads(value)
            except (json.JSONDecodeError, TypeError):
                return value

        def nested(keys, value):
            d = try_convert(value)
            for key in reversed(keys):
                d = {key: d}
            return d

        def merge(original, update):
            for k, v in update.items():
                if isinstance(v, dict) and isinstance(original.get(k), dict):
                    merge(original[k], v)
                else:
                    original[k] = v

        delete = set()
        dict_args: dict[str, dict] = defaultdict(dict)
        for i, arg in enumerate(processed):
            if arg.startswith('--') and '.' in arg:
                if '=' in arg:
                    arg, value = arg.split('=', 1)
                    if '.' not in arg:
                        continue
                else:
                    if i + 1 >= len(processed):
                        continue
                    value = processed[i + 1]
                    delete.add(i + 1)
                key, *keys = arg.split('.')
                merge(dict_args[key], nested(keys, value))
                delete.add(i)
        processed = [a for i, a in enumerate(processed) if i not in delete]
        for key, value in dict_args.items():
            processed.append(key)
            processed.append(json.dumps(value))
        return super().parse_args(processed, namespace)


def add_api_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model_path', type=str, help='The path of a model (not read by the stand-in).')
    for flag, nargs, typ, choices, default in _API_SERVER_FLAGS:
        kwargs: dict[str, Any] = {'default': default}
        if flag in _DEST_OVERRIDES:
            kwargs['dest'] = _DEST_OVERRIDES[flag]
        if nargs == 0:
            parser.add_argument(flag, action='store_true', **kwargs)
            continue
        if nargs is not None:
            kwargs['nargs'] = nargs
        if choices is not None:
            kwargs['choices'] = choices
        parser.add_argument(flag, type=typ, **kwargs)


def build_cli_parser() -> argparse.ArgumentParser:
    """Top-level ``lmdeploy`` parser of the stand-in."""
    parser = FlexibleArgumentParser(
        prog='lmdeploy', description='LMDeploy 0.18 stand-in (tests only): implements `serve api_server`.')
    parser.add_argument('-v', '--version', action='version', version=VERSION)
    sub = parser.add_subparsers(title='Commands', dest='command')
    serve = sub.add_parser('serve', help='Serve LLMs with openai API')
    serve_sub = serve.add_subparsers(title='Commands', dest='serve_command')
    api = serve_sub.add_parser('api_server', help='Serve LLMs with restful api (stand-in).',
                               description='Serve LLMs with restful api using fastapi (stand-in).')
    add_api_server_arguments(api)
    return parser


def api_server_parser() -> argparse.ArgumentParser:
    """The ``serve api_server`` sub-parser of build_cli_parser()."""
    parser = build_cli_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            serve = action.choices['serve']
            for a in serve._actions:
                if isinstance(a, argparse._SubParsersAction):
                    return a.choices['api_server']
    raise RuntimeError('unreachable')


def describe_parser(parser: argparse.ArgumentParser) -> list[str]:
    """One ``FLAG NARGS [type=..] [choices=..] [dest=..]`` line per long
    option, sorted (format documented in dump_flags.py)."""
    lines = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        if action.nargs == 0:
            nargs = '0'
        elif action.nargs is None:
            nargs = '1'
        else:
            nargs = str(action.nargs)
        for opt in action.option_strings:
            if not opt.startswith('--'):
                continue
            parts = [opt, nargs]
            if action.nargs != 0 and action.type is not None:
                parts.append('type=' + getattr(action.type, '__name__', repr(action.type)))
            if action.choices is not None:
                parts.append('choices=' + json.dumps(list(action.choices), separators=(',', ':')))
            derived = action.option_strings[-1].lstrip('-').replace('-', '_')
            for o in action.option_strings:
                if o.startswith('--'):
                    derived = o[2:].replace('-', '_')
                    break
            if action.dest != derived:
                parts.append('dest=' + action.dest)
            lines.append(' '.join(parts))
    return sorted(lines)


# ---------------------------------------------------------------------------
# logging helpers
# ---------------------------------------------------------------------------
_print_lock = threading.Lock()


def _emit(stream, line: str) -> None:
    with _print_lock:
        try:
            stream.write(line + '\n')
            stream.flush()
        except (OSError, ValueError):
            pass


def out(line: str) -> None:
    _emit(sys.stdout, line)


def err(line: str) -> None:
    _emit(sys.stderr, line)


def uv_info(msg: str) -> None:
    """uvicorn's default logger (stderr)."""
    err(f'INFO:     {msg}')


def ld_log(level: str, msg: str, where: str = 'api_server.py:143') -> None:
    """lmdeploy's logger format (stdout)."""
    t = time.time()
    stamp = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t)) + f',{int(t % 1 * 1000):03d}'
    out(f'{stamp} - lmdeploy - {level} - {where} - {msg}')


def parse_worker_pids(log_text: str) -> dict[int, int]:
    """{worker_index: pid} from a server log."""
    return {int(k): int(p) for k, p in re.findall(r'started worker (\d+) pid (\d+)', log_text)}


# ---------------------------------------------------------------------------
# runtime state
# ---------------------------------------------------------------------------
def _env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    return default if v in (None, '') else float(v)


class FifoSlots:
    """A counting semaphore that hands slots out in arrival order."""

    def __init__(self, n: int):
        self.capacity = n
        self.busy = 0
        self.waiters: collections.deque[threading.Event] = collections.deque()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        with self.lock:
            if self.busy < self.capacity and not self.waiters:
                self.busy += 1
                return
            ev = threading.Event()
            self.waiters.append(ev)
        ev.wait()          # the releaser handed its slot over to us

    def release(self) -> None:
        with self.lock:
            if self.waiters:
                self.waiters.popleft().set()
            else:
                self.busy -= 1

    def waiting(self) -> int:
        with self.lock:
            return len(self.waiters)


class Stats:
    def __init__(self, capacity: int):
        self.lock = threading.Lock()
        self.capacity = capacity
        self.in_flight = 0          # received, response not yet sent
        self.generating = 0         # currently holding a slot
        self.generated_tokens = 0   # of every reply sent (a counter: never reset)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.answered = 0
            self.by_match: dict[str, int] = defaultdict(int)
            self.unmatched = 0
            self.judge_requests = 0
            self.judge_verdicts = {'A': 0, 'B': 0, 'invalid': 0}
            self.intervals: list[list[float]] = []
            self.max_generating = 0

    def snapshot(self, slots: FifoSlots) -> dict:
        with self.lock:
            return {
                'requests': self.requests,           # chat+completion HTTP requests received
                'answered': self.answered,           # responses sent
                'by_match': dict(self.by_match),     # prompts per matched answer-key entry
                'unmatched': self.unmatched,         # prompts that got the default reply
                'judge_requests': self.judge_requests,
                'judge_verdicts': dict(self.judge_verdicts),
                'in_flight': self.in_flight,         # received and not yet answered
                'generating': self.generating,       # holding a slot now
                'waiting': slots.waiting(),          # queued for a slot
                'max_generating': self.max_generating,
                'capacity': self.capacity,
                'intervals': [list(i) for i in self.intervals],  # time.time() slot hold per prompt
                'pid': os.getpid(),
            }


class App:
    """Everything a request handler needs."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.model_name = args.model_name or args.model_path
        self.tokens = [k for k in (args.api_keys or []) if k]
        self.token_hashes = [hashlib.sha256(t.encode()).digest() for t in self.tokens]
        self.max_batch_size = args.max_batch_size or DEFAULT_MAX_BATCH_SIZE
        self.slots = FifoSlots(self.max_batch_size)
        self.stats = Stats(self.max_batch_size)
        self.latency_scale = own_setting('STANDIN_LATENCY_SECONDS', self.model_name, 0.0)
        self.latency_dist = os.environ.get('STANDIN_LATENCY_DIST', 'const') or 'const'
        latency_factor('x', self.latency_dist)   # validate
        self.warmup = _env_float('STANDIN_WARMUP_SECONDS', 0.3)
        crash_after = own_setting('STANDIN_CRASH_AFTER_REQUESTS', self.model_name, -1)
        self.crash_after = int(crash_after) if crash_after >= 0 else None
        self.crash_once = os.environ.get('STANDIN_CRASH_ONCE') or None
        hang_after = own_setting('STANDIN_HANG_AFTER_REQUESTS', self.model_name, -1)
        self.hang_after = int(hang_after) if hang_after >= 0 else None
        self.hang_once = os.environ.get('STANDIN_HANG_ONCE') or None
        self.unhealthy_after = _env_float('STANDIN_HANG_UNHEALTHY_AFTER', 1.0)
        self.hung_at: float | None = None
        self.sent_total = 0                       # never reset (crash counter)
        self.sent_lock = threading.Lock()
        markers = os.environ.get('STANDIN_JUDGE_INVALID', '')
        self.answerer = Answerer(load_answer_key(answer_key_path(self.model_name)),
                                 os.environ.get('STANDIN_DEFAULT_REPLY', DEFAULT_REPLY),
                                 [m for m in markers.split(',') if m])
        self.bound_at: float | None = None
        self.created = int(time.time())
        self.shutting_down = threading.Event()

    def record_request(self, body: dict) -> None:
        """STANDIN_REQUEST_LOG: every generation request's JSON body, one line each."""
        path = os.environ.get('STANDIN_REQUEST_LOG')
        if path:
            line = json.dumps(body) + '\n'
            with self.sent_lock, open(path, 'a', encoding='utf-8') as log:
                log.write(line)

    def healthy(self) -> bool:
        return self.bound_at is not None and time.monotonic() - self.bound_at >= self.warmup

    def stuck(self) -> bool:
        """Hung long enough for LMDeploy's health monitor to say so (STANDIN_HANG_UNHEALTHY_AFTER)."""
        return self.hung_at is not None and time.monotonic() - self.hung_at >= self.unhealthy_after

    def hang_if_hung(self) -> None:
        """A request to a hung engine: held until the server shuts down, never answered."""
        if self.hung_at is not None:
            self.shutting_down.wait()
            raise ConnectionResetError('stand-in: hung engine shutting down')

    def check_auth(self, header: str | None) -> bool:
        if not self.tokens:
            return True
        if not header:
            return False
        scheme, _, param = header.partition(' ')
        if scheme.lower() != 'bearer':
            return False
        h = hashlib.sha256(param.encode()).digest()
        ok = False
        for t in self.token_hashes:
            ok |= secrets.compare_digest(h, t)
        return ok

    def after_sent(self) -> None:
        """Count a sent chat/completions response; maybe die, or hang."""
        with self.sent_lock:
            self.sent_total += 1
            n = self.sent_total
        if self.hang_after is not None and n >= self.hang_after and self.hung_at is None:
            try:
                if self.hang_once:
                    open(self.hang_once, 'x').close()
                err(f'stand-in: STANDIN_HANG_AFTER_REQUESTS={self.hang_after} reached, the engine hangs')
                self.hung_at = time.monotonic()
            except FileExistsError:
                self.hang_after = None
        if self.crash_after is not None and n >= self.crash_after:
            if self.crash_once:
                try:
                    open(self.crash_once, 'x').close()   # the one crash, unless another process had it
                except FileExistsError:
                    return
            err(f'stand-in: STANDIN_CRASH_AFTER_REQUESTS={self.crash_after} reached, killing myself')
            try:
                os.kill(os.getpid(), signal.SIGKILL)
            finally:
                os._exit(137)


def error_body(status: int, message: str) -> dict:
    types = {401: 'authentication_error', 404: 'not_found_error', 503: 'server_error', 500: 'server_error'}
    return {'message': message, 'type': types.get(status, 'invalid_request_error'),
            'code': status, 'param': None, 'object': 'error'}


def message_text(content) -> str:
    """Text of an OpenAI message content (string or list of parts)."""
    if content is None:
        return ''
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get('type', 'text') == 'text':
                parts.append(str(p.get('text', '')))
            elif isinstance(p, str):
                parts.append(p)
        return '\n'.join(parts)
    return str(content)


def count_tokens(text: str) -> int:
    return len(text.split())


class ClientError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'uvicorn'
    timeout = 5          # uvicorn's default keep-alive timeout
    # uvicorn sets TCP_NODELAY: without it the body, written after the headers, waits for the
    # client's delayed ACK (40 ms on Linux) on every response.
    disable_nagle_algorithm = True
    app: App             # set on the subclass

    # -- plumbing -----------------------------------------------------------
    def version_string(self):
        return 'uvicorn'

    def log_message(self, format, *args):   # noqa: A002 (silence stdlib logging)
        pass

    def log_request(self, code='-', size='-'):
        try:
            code = int(code)
            phrase = http.HTTPStatus(code).phrase
        except (ValueError, TypeError):
            phrase = ''
        host, port = self.client_address[:2]
        out(f'INFO:     {host}:{port} - "{self.command} {self.path} {self.request_version}" {code} {phrase}')

    def _send_json(self, status: int, body, extra_headers: dict | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode('utf-8')
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _read_body(self) -> bytes:
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b';')[0].strip() or b'0', 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b''.join(chunks)
        n = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(n) if n else b''

    def _json_request(self) -> dict:
        body = self._read_body()
        media = self.headers.get('Content-Type', '').split(';', 1)[0].strip().lower()
        if media != 'application/json':
            raise ClientError(400, "Unsupported Media Type: Only 'application/json' is allowed")
        try:
            data = json.loads(body or b'null')
        except ValueError:
            raise ClientError(400, 'JSON decode error')
        if not isinstance(data, dict):
            raise ClientError(400, 'Input should be a valid dictionary or object to extract fields from')
        return data

    # -- dispatch -----------------------------------------------------------
    ROUTES = {
        '/health': {'GET'},
        '/metrics': {'GET'},
        '/v1/models': {'GET'},
        '/v1/chat/completions': {'POST'},
        '/v1/completions': {'POST'},
        '/terminate': {'GET'},
        '/standin/stats': {'GET'},
        '/standin/reset': {'POST'},
    }

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def _dispatch(self):
        app = self.app
        path = self.path.split('?', 1)[0]
        try:
            if not path.startswith(AUTH_SKIP_PREFIXES) and not app.check_auth(self.headers.get('Authorization')):
                self._read_body()
                return self._send_json(401, error_body(401, 'Unauthorized.'))
            methods = self.ROUTES.get(path)
            if methods is None:
                self._read_body()
                return self._send_json(404, {'detail': 'Not Found'})
            if self.command not in methods:
                self._read_body()
                return self._send_json(405, {'detail': 'Method Not Allowed'}, {'Allow': ', '.join(sorted(methods))})
            if path == '/health':
                return self._health()
            if path == '/metrics':
                if app.args.disable_metrics:  # as LMDeploy mounts none
                    return self._send_json(404, {'detail': 'Not Found'})
                return self._metrics()
            if path == '/v1/models':
                return self._models()
            if path == '/standin/stats':
                return self._send_json(200, app.stats.snapshot(app.slots))
            if path == '/standin/reset':
                self._read_body()
                app.stats.reset()
                return self._send_json(200, {'reset': True})
            if path == '/terminate':
                return self._terminate()
            self._generate(chat=(path == '/v1/chat/completions'))
        except ClientError as e:
            self._send_json(e.status, error_body(e.status, e.message))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _metrics(self):
        st = self.app.stats
        with st.lock:
            values = {'num_requests_running': st.in_flight, 'num_requests_waiting': 0,
                      'generation_tokens_total': st.generated_tokens}
        label = '{model_name="%s"}' % self.app.model_name
        text = ''.join(f'# TYPE lmdeploy:{name} {"counter" if name.endswith("_total") else "gauge"}\n'
                       f'lmdeploy:{name}{label} {float(value)}\n' for name, value in values.items())
        data = text.encode()
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _health(self):
        if self.app.stuck():
            self._send_json(503, {'status': 'unhealthy', 'message': 'Engine made no progress.'})
        elif self.app.healthy():
            self._send_json(200, {'status': 'healthy', 'message': 'Engine is healthy.'})
        else:
            self._send_json(503, {'status': 'initializing', 'message': 'Engine health monitor is starting.'})

    def _models(self):
        name = self.app.model_name
        now = int(time.time())
        self._send_json(200, {
            'object': 'list',
            'data': [{
                'id': name, 'object': 'model', 'created': now, 'owned_by': 'lmdeploy',
                'root': name, 'parent': None,
                'permission': [{
                    'id': f'modelperm-{uuid.uuid4().hex[:22]}', 'object': 'model_permission',
                    'created': now, 'allow_create_engine': False, 'allow_sampling': True,
                    'allow_logprobs': True, 'allow_search_indices': True, 'allow_view': True,
                    'allow_fine_tuning': False, 'organization': '*', 'group': None,
                    'is_blocking': False,
                }],
            }],
        })

    def _terminate(self):
        if not self.app.args.allow_terminate_by_client:
            raise ClientError(400, 'The server can not be terminated. Please add '
                                   '--allow-terminate-by-client when start the server.')
        self.send_response(200)
        self.send_header('Content-Length', '0')
        self.end_headers()
        self.wfile.flush()
        os.kill(os.getpid(), signal.SIGTERM)

    # -- generation -----------------------------------------------------------
    def _run_prompt(self, text: str, limit: int | None) -> tuple[str, str]:
        """Decide the reply (cut at LIMIT tokens), wait for a slot, 'generate'; the reply and
        its finish reason."""
        app, st = self.app, self.app.stats
        reply, kind, match = app.answerer.answer(text)
        reply, finish = cut(reply, limit)
        with st.lock:
            if kind == 'judge':
                st.judge_requests += 1
                st.judge_verdicts[reply if reply in ('A', 'B') else 'invalid'] += 1
            elif kind == 'key':
                st.by_match[match] += 1
            else:
                st.unmatched += 1
        seconds = answer_seconds(text, app.latency_scale, app.latency_dist)
        app.slots.acquire()
        try:
            start = time.time()
            with st.lock:
                st.generating += 1
                st.max_generating = max(st.max_generating, st.generating)
            self._generate_tokens(count_tokens(reply), seconds)
            end = time.time()
        finally:
            with st.lock:
                st.generating -= 1
            app.slots.release()
        with st.lock:
            st.intervals.append([start, end])
        return reply, finish

    def _generate_tokens(self, tokens: int, seconds: float) -> None:
        """SECONDS of generation, its TOKENS counted as they come (lmdeploy:generation_tokens_total
        moves all along a long answer, as LMDeploy's does at each step of its engine)."""
        st = self.app.stats
        steps = max(1, round(seconds / TOKEN_STEP_SECONDS))
        for _ in range(steps):
            if seconds > 0:
                time.sleep(seconds / steps)
            with st.lock:
                st.generated_tokens += tokens / steps

    def _generate(self, chat: bool):
        app, st = self.app, self.app.stats
        req = self._json_request()
        app.record_request(req)
        if 'model' not in req:
            raise ClientError(400, 'model: Field required')
        field = 'messages' if chat else 'prompt'
        if field not in req:
            raise ClientError(400, f'{field}: Field required')
        model = req['model']
        if model != app.model_name:
            raise ClientError(404, f'The model {model!r} does not exist.')
        if chat:
            messages = req['messages']
            if not isinstance(messages, list):
                raise ClientError(400, 'messages: Input should be a valid list')
            texts = [message_text(m.get('content')) for m in messages if isinstance(m, dict)]
            last_user = ''
            for m in reversed(messages):
                if isinstance(m, dict) and m.get('role') == 'user':
                    last_user = message_text(m.get('content'))
                    break
            prompts = [last_user]
            prompt_tokens = [count_tokens('\n'.join(texts))]
        else:
            prompt = req['prompt']
            prompts = [prompt] if isinstance(prompt, str) else [str(p) for p in prompt]
            prompt_tokens = [count_tokens(p) for p in prompts]
        session_len = app.args.session_len
        if session_len is not None and max(prompt_tokens) >= session_len:
            raise ClientError(400, f'Input length ({max(prompt_tokens)}) must be smaller than the model context '
                                   f'length ({session_len}).')
        with st.lock:
            st.requests += 1
            st.in_flight += 1
        try:
            app.hang_if_hung()
            max_tokens = req.get('max_tokens') or req.get('max_completion_tokens')
            limits = [token_limit(max_tokens, session_len, tokens) for tokens in prompt_tokens]
            answers = [self._run_prompt(p, limit) for p, limit in zip(prompts, limits)]
            replies, finishes = [reply for reply, _ in answers], [finish for _, finish in answers]
            created = int(time.time())
            if req.get('stream'):
                self._send_stream(chat, req, replies, finishes, prompt_tokens, created)
            else:
                self._send_json(200, self._full_response(chat, replies, finishes, prompt_tokens, created))
            with st.lock:
                st.answered += 1
        finally:
            with st.lock:
                st.in_flight -= 1
        app.after_sent()

    @staticmethod
    def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {'prompt_tokens': prompt_tokens, 'total_tokens': prompt_tokens + completion_tokens,
                'completion_tokens': completion_tokens,
                'prompt_tokens_details': {'cached_tokens': 0}, 'completion_tokens_details': None}

    def _full_response(self, chat, replies, finishes, prompt_tokens, created) -> dict:
        ptoks = sum(prompt_tokens)
        ctoks = sum(count_tokens(r) for r in replies)
        if chat:
            return {
                'id': f'chatcmpl-{uuid.uuid4().hex[:22]}', 'object': 'chat.completion', 'created': created,
                'model': self.app.model_name,
                'choices': [{
                    'index': 0,
                    'message': {'role': 'assistant', 'content': replies[0], 'reasoning_content': None,
                                'tool_calls': None},
                    'logprobs': None, 'output_token_logprobs': None, 'finish_reason': finishes[0],
                    'output_ids': None, 'routed_experts': None,
                }],
                'usage': self._usage(ptoks, ctoks), 'service_tier': None,
            }
        return {
            'id': f'cmpl-{uuid.uuid4().hex[:22]}', 'object': 'text_completion', 'created': created,
            'model': self.app.model_name,
            'choices': [{'index': i, 'text': r, 'logprobs': None, 'finish_reason': finish}
                        for i, (r, finish) in enumerate(zip(replies, finishes))],
            'usage': self._usage(ptoks, ctoks),
        }

    def _send_stream(self, chat, req, replies, finishes, prompt_tokens, created):
        include_usage = bool((req.get('stream_options') or {}).get('include_usage'))
        rid = f'chatcmpl-{uuid.uuid4().hex[:22]}' if chat else f'cmpl-{uuid.uuid4().hex[:22]}'
        obj = 'chat.completion.chunk' if chat else 'text_completion'
        base = {'id': rid, 'object': obj, 'created': created, 'model': self.app.model_name}
        events = []
        for i, (reply, finish) in enumerate(zip(replies, finishes)):
            if chat:
                pieces = [({'role': 'assistant', 'content': reply}, None),
                          ({'role': 'assistant', 'content': ''}, finish)]
                for delta, fin in pieces:
                    choice = {'index': 0, 'delta': delta}
                    if fin:
                        choice['finish_reason'] = fin
                    ev = dict(base, choices=[choice])
                    if include_usage:
                        ev['usage'] = None
                    events.append(ev)
            else:
                for text, fin in ((reply, None), ('', finish)):
                    choice = {'index': 0, 'text': text}
                    if fin:
                        choice['finish_reason'] = fin
                    ev = dict(base, choices=[choice])
                    if include_usage:
                        ev['usage'] = None
                    events.append(ev)
        if include_usage:
            events.append(dict(base, choices=[], usage=self._usage(
                sum(prompt_tokens), sum(count_tokens(r) for r in replies))))
        self.send_response(200)
        self.send_header('Content-Type', 'text/event-stream; charset=utf-8')
        self.send_header('Transfer-Encoding', 'chunked')
        self.end_headers()
        payloads = [f'data: {json.dumps(ev, ensure_ascii=False)}\n\n' for ev in events] + ['data: [DONE]\n\n']
        for p in payloads:
            data = p.encode('utf-8')
            self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b'0\r\n\r\n')
        self.wfile.flush()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return
        super().handle_error(request, client_address)


class Server6(Server):
    address_family = socket.AF_INET6


# ---------------------------------------------------------------------------
# processes: workers, proxy registration, lifecycle
# ---------------------------------------------------------------------------
def worker_main(argv: list[str]) -> int:
    """``lmdeploy --standin-worker K [READY_FD]``: sleeps; see module docstring."""
    k = int(argv[0]) if argv else 0
    if k == 0:
        try:
            os.setsid()
        except OSError:
            pass
    elif k == 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if len(argv) > 1:                     # tell the server we are set up
        try:
            fd = int(argv[1])
            os.write(fd, b'1')
            os.close(fd)
        except (OSError, ValueError):
            pass
    limit = _env_float('STANDIN_WORKER_MAX_SECONDS', 900.0)
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        return 130
    return 0


def start_workers(n: int) -> list[subprocess.Popen]:
    """Start n workers; returns once each has set up its session/signals."""
    procs = []
    for k in range(n):
        r, w = os.pipe()
        try:
            p = subprocess.Popen([sys.executable, EXECUTABLE, WORKER_FLAG, str(k), str(w)],
                                 stdin=subprocess.DEVNULL, close_fds=True, pass_fds=(w,))
        finally:
            os.close(w)
        with os.fdopen(r, 'rb') as ready:
            ready.read(1)                 # b'1', or b'' if the worker died
        procs.append(p)
        out(f'INFO: started worker {k} pid {p.pid}')
    return procs


def register_to_proxy(app: App) -> None:
    """Like lmdeploy.serve.openai.api_server.register_to_proxy (0.18)."""
    args = app.args
    if args.backend == 'pytorch':
        role = {'Hybrid': 1, 'Prefill': 2, 'Decode': 3}[args.role]
    else:
        role = 1        # TurbomindEngineConfig has no `role`
    body = {'url': f'http://{args.server_name}:{args.server_port}',
            'status': {'models': [app.model_name], 'role': role}}
    url = f'{args.proxy_url}/nodes/add'
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method='POST',
                                 headers={'accept': 'application/json', 'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        ld_log('ERROR', f'Service registration failed: {e.code}: {e.read().decode(errors="replace")}')
    except Exception as e:  # noqa: BLE001
        ld_log('ERROR', f'Service registration failed: {e}')


def crash_during_load() -> int:
    tb = (
        'Traceback (most recent call last):\n'
        f'  File "{EXECUTABLE}", line 8, in <module>\n'
        '    sys.exit(run())\n'
        '  File "/opt/lmdeploy/lmdeploy/cli/entrypoint.py", line 41, in run\n'
        '    args.run(args)\n'
        '  File "/opt/lmdeploy/lmdeploy/cli/serve.py", line 306, in api_server\n'
        '    run_api_server(\n'
        '  File "/opt/lmdeploy/lmdeploy/serve/openai/api_server.py", line 371, in serve\n'
        '    server_context.async_engine = pipeline_class(\n'
        '  File "/opt/lmdeploy/lmdeploy/pytorch/engine/model_agent.py", line 1042, in _build_model\n'
        '    model = build_patched_model(self.model_config, device=device)\n'
        f'{CRASH_MESSAGE}'
    )
    err(tb)
    return 1


class ShutdownRequest(Exception):
    pass


def serve(args: argparse.Namespace) -> int:
    if args.server_port is None:
        args.server_port = DEFAULT_PORT
    if not args.model_name:
        args.model_name = args.model_path
    app = App(args)            # validates env (answer key, latency dist)

    if args.tp and args.tp > 1:
        start_workers(args.tp)

    time.sleep(load_seconds(args.model_name))
    crash = os.environ.get('STANDIN_CRASH_DURING_LOAD', '')
    if crash == '1' or os.path.basename(args.model_name) in crash.split(','):
        return crash_during_load()

    for _ in range(3):
        out(f'HINT:    Please open \033[93m\033[1mhttp://{args.server_name}:{args.server_port}'
            '\033[0m in a browser for detailed api usage!!!')

    # uvicorn captures SIGINT/SIGTERM from here on
    captured: list[int] = []
    stop = threading.Event()

    def on_signal(sig, frame):  # noqa: ARG001 - signal handler signature
        captured.append(sig)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    pid = os.getpid()
    uv_info(f'Started server process [{pid}]')
    uv_info('Waiting for application startup.')
    if args.proxy_url:
        register_to_proxy(app)
    uv_info('Application startup complete.')

    host, port = args.server_name, args.server_port
    handler = type('BoundHandler', (Handler,), {'app': app})
    try:
        cls = Server6 if ':' in host else Server
        httpd = cls((host, port), handler)
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        err(f'ERROR:    [Errno {e.errno}] error while attempting to bind on address {(host, port)!r}: {reason}')
        uv_info('Waiting for application shutdown.')
        uv_info('Application shutdown complete.')
        return 3
    app.bound_at = time.monotonic()
    fmt = 'http://[%s]:%d' if ':' in host else 'http://%s:%d'
    uv_info(f'Uvicorn running on {fmt % (host, port)} (Press CTRL+C to quit)')

    t = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True)
    t.start()
    while not stop.wait(0.5):
        pass

    uv_info('Shutting down')
    app.shutting_down.set()
    httpd.shutdown()
    httpd.server_close()
    deadline = time.monotonic() + _env_float('STANDIN_SHUTDOWN_TIMEOUT', 30.0)
    while app.stats.in_flight > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    uv_info('Waiting for application shutdown.')
    uv_info('Application shutdown complete.')
    uv_info(f'Finished server process [{pid}]')
    for s, h in old.items():
        signal.signal(s, h)
    if signal.SIGTERM in captured:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(pid, signal.SIGTERM)     # like uvicorn: re-raise -> status -15
        time.sleep(1)
    return 0


def exec_real_proxy(argv: list[str]) -> int:
    """`serve proxy` runs on a CPU, so the stand-in hands it to the real LMDeploy named by
    STANDIN_REAL_LMDEPLOY (exec: same pid, so whoever started us still owns the process)."""
    real = os.environ.get('STANDIN_REAL_LMDEPLOY')
    if not real:
        print('stand-in lmdeploy: `serve proxy` needs STANDIN_REAL_LMDEPLOY=<path to a real lmdeploy>',
              file=sys.stderr)
        return 2
    os.execv(real, [real, *argv])
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [WORKER_FLAG]:
        return worker_main(argv[1:])
    if argv[:2] == ['serve', 'proxy']:
        return exec_real_proxy(argv)
    parser = build_cli_parser()
    args = parser.parse_args(argv)
    if args.command is None:            # like the real CLI: help, exit 0
        parser.print_help()
        return 0
    if getattr(args, 'serve_command', None) != 'api_server':
        parser.parse_args(['serve', '--help'])          # prints the serve help, exits 0
    return serve(args)


if __name__ == '__main__':
    sys.exit(main())
