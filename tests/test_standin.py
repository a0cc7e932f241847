"""Tests of the LMDeploy 0.18 stand-in (tests/standin/lmdeploy).

Every test starts real processes on 127.0.0.1 (free ports) and the
``launch`` fixture always kills what it started: the server's process group
and the tp worker pids read from its log.
"""
from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

STANDIN_DIR = Path(__file__).resolve().parent / 'standin'
EXE = STANDIN_DIR / 'lmdeploy'
FLAGS_FILE = STANDIN_DIR / 'api_server_flags_0.18.txt'
sys.path.insert(0, str(STANDIN_DIR))

import standin_server as ss  # noqa: E402
from toolkit import alive, wait_until  # noqa: E402

from lmeval.watchdog import Load, parse_load  # noqa: E402

from lmeval.launch import free_port  # noqa: E402
from lmeval.readiness import port_open  # noqa: E402

pytestmark = pytest.mark.processes

# verbatim copy of OpenCompass's GRADER_TEMPLATE (e.g.
# opencompass/configs/datasets/bbh/bbh_llmjudge_gen_b5bdf1.py), whitespace included
GRADER_TEMPLATE = """
    Please as a grading expert, judge whether the final answers given by the candidates below are consistent with the standard answers, that is, whether the candidates answered correctly.

    Please judge whether the following answers are consistent with the standard answer based on the above criteria. Grade the predicted answer of this new question as one of:
    A: CORRECT
    B: INCORRECT
    Just return the letters "A" or "B", with no text around it.

    Here is your task. Simply reply with either CORRECT, INCORRECT. Don't apologize or correct yourself if there was a mistake; we are just trying to grade the answer.


    <Original Question Begin>: \n{input}\n<Original Question End>\n\n
    <Gold Target Begin>: \n{target}\n<Gold Target End>\n\n
    <Predicted Answer Begin>: \n{prediction}\n<Predicted End>\n\n

    Judging the correctness of candidates' answers:
""".strip()  # noqa: E501 - verbatim

# the "academic" variant (opencompass/configs/datasets/gpqa/gpqa_cascade_eval_academic.py)
ACADEMIC_TEMPLATE = """<Original Question Begin>:
{input}
<Original Question End>
<Standard Answer Begin>:
{target}
<Standard Answer End>
<Candidate's Answer Begin>: 
{prediction}
<Candidate's Answer End>
Judging the correctness of the candidate's answer:"""  # noqa: W291 - verbatim


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def is_standin_worker(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return ss.WORKER_FLAG.encode() in f.read()
    except OSError:
        return False


def sig_ignored(pid: int) -> int:
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('SigIgn:'):
                return int(line.split()[1], 16)
    raise AssertionError('no SigIgn line')



class Standin:
    def __init__(self, popen: subprocess.Popen, port: int, out: Path, err: Path, started: float):
        self.popen, self.port, self.out_path, self.err_path, self.started = popen, port, out, err, started
        self.url = f'http://127.0.0.1:{port}'

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors='replace')

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors='replace')

    def worker_pids(self) -> dict[int, int]:
        return ss.parse_worker_pids(self.stdout)

    def wait_healthy(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen.poll() is None, f'stand-in died: rc={self.popen.returncode}\n{self.stderr}'
            try:
                if httpx.get(self.url + '/health', timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise AssertionError('stand-in not healthy in time\n' + self.stderr)

    def stats(self) -> dict:
        return httpx.get(self.url + '/standin/stats', timeout=5).json()


BASE_ENV = {
    'STANDIN_LOAD_SECONDS': '0.2',
    'STANDIN_WARMUP_SECONDS': '0.1',
    'STANDIN_WORKER_MAX_SECONDS': '60',   # safety net if cleanup ever fails
}


@pytest.fixture
def launch(tmp_path):
    started: list[Standin] = []

    def _launch(*flags: str, env: dict | None = None, port: int | None = None,
                model: str = '/models/test-model', wait: bool = True) -> Standin:
        port = port or free_port()
        n = len(started)
        out, err = tmp_path / f'standin{n}.out', tmp_path / f'standin{n}.err'
        full_env = {k: v for k, v in os.environ.items() if not k.startswith('STANDIN_')}
        full_env.update(BASE_ENV)
        full_env.update(env or {})
        argv = [str(EXE), 'serve', 'api_server', model, '--server-name', '127.0.0.1',
                '--server-port', str(port), *flags]
        with open(out, 'wb') as fo, open(err, 'wb') as fe:
            t0 = time.monotonic()
            p = subprocess.Popen(argv, stdout=fo, stderr=fe, env=full_env, start_new_session=True)
        s = Standin(p, port, out, err, t0)
        started.append(s)
        if wait:
            s.wait_healthy()
        return s

    yield _launch

    for s in started:
        pids = list(s.worker_pids().values())
        try:
            os.killpg(s.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pids:
            if is_standin_worker(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            s.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:
            wait_until(lambda: not alive(pid), 5)


def chat(s: Standin, text: str, key: str | None = None, model: str = '/models/test-model',
         client: httpx.Client | None = None, **extra) -> httpx.Response:
    headers = {'Authorization': f'Bearer {key}'} if key else {}
    body = {'model': model, 'messages': [{'role': 'system', 'content': 'be brief'},
                                         {'role': 'user', 'content': text}], **extra}
    c = client or httpx
    return c.post(s.url + '/v1/chat/completions', json=body, headers=headers, timeout=30)


def reply_of(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return resp.json()['choices'][0]['message']['content']


# ---------------------------------------------------------------------------
# startup
# ---------------------------------------------------------------------------
def test_bind_after_load_then_503_then_200(launch):
    s = launch(env={'STANDIN_LOAD_SECONDS': '0.8', 'STANDIN_WARMUP_SECONDS': '0.6'}, wait=False)
    time.sleep(0.3)
    assert s.popen.poll() is None
    assert not port_open('127.0.0.1', s.port), 'port must not be bound while loading'
    assert 'Uvicorn running' not in s.stderr

    seen: list[tuple[float, int]] = []
    models_during_warmup = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            code = httpx.get(s.url + '/health', timeout=1).status_code
        except httpx.TransportError:
            time.sleep(0.02)
            continue
        seen.append((time.monotonic() - s.started, code))
        if code == 503 and models_during_warmup is None:
            models_during_warmup = httpx.get(s.url + '/v1/models', timeout=1)
        if code == 200:
            break
        time.sleep(0.02)
    codes = [c for _, c in seen]
    assert codes[0] == 503 and codes[-1] == 200, codes
    assert set(codes[:-1]) == {503}, codes
    assert seen[0][0] >= 0.8, 'bound before the load time elapsed'
    first_200 = seen[-1][0]
    assert first_200 - seen[0][0] >= 0.3, seen             # warm-up window ~0.6 s after binding
    assert models_during_warmup is not None and models_during_warmup.status_code == 200
    assert httpx.get(s.url + '/health').json() == {'status': 'healthy', 'message': 'Engine is healthy.'}
    err = s.stderr
    assert f'INFO:     Uvicorn running on http://127.0.0.1:{s.port} (Press CTRL+C to quit)' in err
    assert err.index('Application startup complete.') < err.index('Uvicorn running')


def test_port_clash_message_and_exit_3(launch):
    with socket.socket() as blocker:
        blocker.bind(('127.0.0.1', 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        s = launch(port=port, wait=False)
        rc = s.popen.wait(timeout=10)
    assert rc == 3      # uvicorn 0.54 exits with STARTUP_FAILURE = 3
    assert (f"ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', {port}): "
            'address already in use') in s.stderr
    assert 'Uvicorn running' not in s.stderr


def test_crash_during_load(launch):
    s = launch(env={'STANDIN_CRASH_DURING_LOAD': '1', 'STANDIN_LOAD_SECONDS': '0.3'}, wait=False)
    rc = s.popen.wait(timeout=10)
    assert rc == 1
    err = s.stderr
    assert 'Traceback (most recent call last):' in err
    assert err.rstrip().endswith('RuntimeError: CUDA out of memory (stand-in)')
    assert 'Uvicorn running' not in err
    assert not port_open('127.0.0.1', s.port)


# ---------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------
def test_api_keys(launch):
    s = launch('--api-keys', 'k1', 'k2')
    unauthorized = {'message': 'Unauthorized.', 'type': 'authentication_error', 'code': 401,
                    'param': None, 'object': 'error'}
    r = httpx.get(s.url + '/v1/models')
    assert r.status_code == 401 and r.json() == unauthorized
    r = httpx.get(s.url + '/v1/models', headers={'Authorization': 'Bearer nope'})
    assert r.status_code == 401
    r = httpx.get(s.url + '/v1/models', headers={'Authorization': 'Basic k1'})
    assert r.status_code == 401
    assert chat(s, 'hello').status_code == 401
    assert chat(s, 'hello', key='wrong').status_code == 401
    assert httpx.get(s.url + '/v1/models', headers={'Authorization': 'Bearer k2'}).status_code == 200
    assert reply_of(chat(s, 'hello', key='k1')) == "I don't know."
    assert httpx.get(s.url + '/health').status_code == 200            # no key needed
    assert httpx.get(s.url + '/standin/stats').status_code == 200     # no key needed
    assert s.stats()['answered'] == 1
    assert httpx.get(s.url + '/metrics').status_code == 401           # LMDeploy 0.18 guards its metrics
    metrics = httpx.get(s.url + '/metrics', headers={'Authorization': 'Bearer k1'})
    assert metrics.status_code == 200
    assert parse_load(metrics.text) == Load(requests=0.0, tokens=3.0)  # "I don't know." is 3 words


def test_models_answers_completions_stream(launch, tmp_path):
    key = tmp_path / 'key.json'
    key.write_text(json.dumps([
        {'match': 'capital of France', 'reply': 'Paris'},
        {'match': 'France', 'reply': 'never used for the capital question'},
        {'match': '2+2', 'reply': 'The answer is 4.'},
    ]))
    s = launch('--model-name', 'served', env={'STANDIN_ANSWER_KEY': str(key),
                                              'STANDIN_DEFAULT_REPLY': 'no idea'})
    models = httpx.get(s.url + '/v1/models').json()
    assert models['object'] == 'list'
    [card] = models['data']
    assert card['id'] == card['root'] == 'served'
    assert card['owned_by'] == 'lmdeploy' and card['object'] == 'model' and card['parent'] is None
    assert card['permission'][0]['object'] == 'model_permission'

    with httpx.Client(timeout=30) as client:     # keep-alive: one connection
        r = chat(s, 'What is the capital of France?', model='served', client=client)
        body = r.json()
        assert body['object'] == 'chat.completion' and body['model'] == 'served'
        assert body['choices'][0]['message'] == {'role': 'assistant', 'content': 'Paris',
                                                 'reasoning_content': None, 'tool_calls': None}
        assert body['choices'][0]['finish_reason'] == 'stop'
        u = body['usage']
        assert u['total_tokens'] == u['prompt_tokens'] + u['completion_tokens'] and u['completion_tokens'] == 1
        assert reply_of(chat(s, 'Tell me about France', model='served', client=client)) == \
            'never used for the capital question'
        assert reply_of(chat(s, 'Something else', model='served', client=client)) == 'no idea'
        # only the LAST user message is matched
        r = client.post(s.url + '/v1/chat/completions', json={'model': 'served', 'messages': [
            {'role': 'user', 'content': 'capital of France'}, {'role': 'assistant', 'content': 'Paris'},
            {'role': 'user', 'content': [{'type': 'text', 'text': 'and 2+2?'}]}]})
        assert reply_of(r) == 'The answer is 4.'
    ports = [line.split(' - ')[0].rsplit(':', 1)[1] for line in s.stdout.splitlines()
             if '"POST /v1/chat/completions' in line]
    assert len(ports) == 4 and len(set(ports)) == 1, 'HTTP/1.1 keep-alive connection was not reused'

    r = chat(s, 'capital of France', model='other')
    assert r.status_code == 404
    assert r.json() == {'message': "The model 'other' does not exist.", 'type': 'not_found_error',
                        'code': 404, 'param': None, 'object': 'error'}

    r = httpx.post(s.url + '/v1/completions', json={'model': 'served', 'prompt': 'Q: 2+2 = ?'})
    assert r.status_code == 200
    assert r.json()['object'] == 'text_completion' and r.json()['choices'][0]['text'] == 'The answer is 4.'
    r = httpx.post(s.url + '/v1/completions', json={'model': 'served', 'prompt': ['2+2', 'capital of France']})
    assert [c['text'] for c in r.json()['choices']] == ['The answer is 4.', 'Paris']

    with httpx.stream('POST', s.url + '/v1/chat/completions', json={
            'model': 'served', 'stream': True, 'stream_options': {'include_usage': True},
            'messages': [{'role': 'user', 'content': 'capital of France'}]}) as r:
        assert r.status_code == 200 and r.headers['content-type'].startswith('text/event-stream')
        events = [line[len('data: '):] for line in r.iter_lines() if line.startswith('data: ')]
    assert events[-1] == '[DONE]'
    chunks = [json.loads(e) for e in events[:-1]]
    assert ''.join(c['choices'][0]['delta'].get('content') or '' for c in chunks if c['choices']) == 'Paris'
    assert [c['choices'][0].get('finish_reason') for c in chunks if c['choices']][-1] == 'stop'
    assert chunks[-1]['usage']['completion_tokens'] == 1

    st = s.stats()
    assert st['requests'] == 7 and st['answered'] == 7   # the 404 is not counted
    assert st['by_match'] == {'capital of France': 3, 'France': 1, '2+2': 3}
    assert st['unmatched'] == 1 and st['in_flight'] == 0 and st['capacity'] == 128
    assert len(st['intervals']) == 8      # one per prompt (incl. a 2-prompt completion)
    assert httpx.post(s.url + '/standin/reset').status_code == 200
    st = s.stats()
    assert st['requests'] == 0 and st['by_match'] == {} and st['intervals'] == []


def test_judge_mode(launch, tmp_path):
    key = tmp_path / 'key.json'
    key.write_text(json.dumps([{'match': 'Gold Target', 'reply': 'answer key must not win'}]))
    s = launch(env={'STANDIN_ANSWER_KEY': str(key), 'STANDIN_JUDGE_INVALID': 'GARBLED,@@'})

    def grade(target, prediction, template=GRADER_TEMPLATE):
        prompt = template.format(input='What is the capital of France?', target=target, prediction=prediction)
        return reply_of(chat(s, prompt))

    assert grade('Paris', 'paris.') == 'A'
    assert grade('  The   Eiffel Tower ', 'the eiffel tower!') == 'A'
    assert grade('Paris', 'Lyon') == 'B'
    assert grade('42', '42 apples') == 'B'
    assert grade('Paris', 'GARBLED output') == 'I cannot judge this.'
    assert grade('B', 'b', template=ACADEMIC_TEMPLATE) == 'A'
    assert grade('B', 'C', template=ACADEMIC_TEMPLATE) == 'B'
    st = s.stats()
    assert st['judge_requests'] == 7
    assert st['judge_verdicts'] == {'A': 3, 'B': 3, 'invalid': 1}
    assert st['by_match'] == {}
    # outside judge mode the key applies
    assert reply_of(chat(s, 'no Gold Target markers here')) == 'answer key must not win'


def test_crash_after_requests(launch):
    # two prompts with very different deterministic 'heavy' latencies
    scale = 0.2
    fast = next(f'fast {i}' for i in range(1000) if ss.answer_seconds(f'fast {i}', scale, 'heavy') < 0.1)
    slow = next(f'slow {i}' for i in range(1000) if ss.answer_seconds(f'slow {i}', scale, 'heavy') > 0.8)
    s = launch(env={'STANDIN_CRASH_AFTER_REQUESTS': '2', 'STANDIN_LATENCY_SECONDS': str(scale),
                    'STANDIN_LATENCY_DIST': 'heavy'})
    assert chat(s, fast).status_code == 200
    slow_result: list = []

    def slow_request():
        try:
            slow_result.append(chat(s, slow))
        except httpx.TransportError as e:
            slow_result.append(e)

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.1)
    assert chat(s, fast).status_code == 200          # 2nd answer sent -> dies at once
    assert s.popen.wait(timeout=5) == -signal.SIGKILL
    t.join(5)
    assert len(slow_result) == 1 and isinstance(slow_result[0], httpx.TransportError), slow_result
    with pytest.raises(httpx.TransportError):
        chat(s, fast)


def test_capacity_queueing(launch):
    s = launch('--max-batch-size', '2', env={'STANDIN_LATENCY_SECONDS': '0.5'})
    results: list[int] = []

    def one(i):
        results.append(chat(s, f'question {i}').status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert results == [200] * 4
    assert 0.95 <= elapsed < 1.45, elapsed
    st = s.stats()
    assert st['capacity'] == 2 and st['max_generating'] == 2
    iv = sorted(st['intervals'])
    assert len(iv) == 4 and all(0.45 <= e - b < 0.7 for b, e in iv)
    for b, _ in iv:      # never more than 2 slots held at once
        assert sum(1 for b2, e2 in iv if b2 <= b < e2) <= 2


def test_answer_seconds_model():
    assert ss.answer_seconds('anything', 0, 'heavy') == 0
    assert ss.answer_seconds('anything', 0.5, 'const') == 0.5
    a = [ss.answer_seconds(f'prompt {i}', 1.0, 'heavy') for i in range(20000)]
    assert a[:50] == [ss.answer_seconds(f'prompt {i}', 1.0, 'heavy') for i in range(50)]   # deterministic
    assert 0.9 < sum(a) / len(a) < 1.1
    assert min(a) > 0.3 and max(a) <= ss.HEAVY_MAX_FACTOR + 1e-9
    assert sum(x > 5 for x in a) > 50      # heavy tail: ~1.8 % above 5x the mean
    with pytest.raises(ValueError):
        ss.answer_seconds('x', 1.0, 'bogus')


# ---------------------------------------------------------------------------
# processes and signals
# ---------------------------------------------------------------------------
def test_tp_workers_survive_sigterm(launch):
    s = launch('--tp', '3', env={'STANDIN_LATENCY_SECONDS': '0.6'})
    workers = s.worker_pids()
    assert sorted(workers) == [0, 1, 2]
    main_pid = s.popen.pid
    for k, pid in workers.items():
        assert alive(pid) and is_standin_worker(pid)
    SIGTERM_BIT, SIGINT_BIT = 1 << (signal.SIGTERM - 1), 1 << (signal.SIGINT - 1)
    assert os.getsid(workers[0]) != os.getsid(main_pid)            # own session
    assert os.getpgid(workers[0]) != os.getpgid(main_pid)
    assert os.getsid(workers[1]) == os.getsid(main_pid) == os.getsid(workers[2])
    assert sig_ignored(workers[1]) & SIGTERM_BIT and sig_ignored(workers[1]) & SIGINT_BIT
    assert not sig_ignored(workers[2]) & SIGTERM_BIT
    os.kill(workers[1], signal.SIGTERM)
    time.sleep(0.2)
    assert alive(workers[1]), 'worker 1 must ignore SIGTERM'

    # graceful: an in-flight request still gets its answer
    got: list = []
    t = threading.Thread(target=lambda: got.append(chat(s, 'slow question').status_code))
    t.start()
    time.sleep(0.15)
    os.killpg(main_pid, signal.SIGTERM)        # reaches main, worker 1 (ignored), worker 2
    rc = s.popen.wait(timeout=10)
    t.join(5)
    assert got == [200]
    assert rc == -signal.SIGTERM               # uvicorn re-raises SIGTERM after its graceful shutdown
    assert 'INFO:     Shutting down' in s.stderr and 'Finished server process' in s.stderr
    time.sleep(0.2)
    assert alive(workers[0]) and alive(workers[1])       # not stopped by the server
    assert not alive(workers[2]) or wait_until(lambda: not alive(workers[2]), 2)   # plain worker got SIGTERM
    for pid in (workers[0], workers[1]):
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not alive(workers[0]) and not alive(workers[1]), 5)


def test_sigint_graceful_exit_0(launch):
    s = launch()
    s.popen.send_signal(signal.SIGINT)
    assert s.popen.wait(timeout=10) == 0
    assert 'Finished server process' in s.stderr
    assert not port_open('127.0.0.1', s.port)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
def real_flag_table() -> list[str]:
    return [line for line in FLAGS_FILE.read_text().splitlines() if line and not line.startswith('#')]


def test_flag_table_matches_real_parser():
    table = real_flag_table()
    assert len(table) > 70 and '--server-port 1 type=int' in table and '--api-keys * type=str' in table
    assert ss.describe_parser(ss.api_server_parser()) == table


@pytest.mark.lmdeploy
def test_flag_table_is_the_installed_lmdeploy_parser(lmdeploy_python):
    """The table the stand-in's parser is checked against is what the real parser has now."""
    done = subprocess.run([str(lmdeploy_python), str(STANDIN_DIR / 'dump_flags.py')], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == FLAGS_FILE.read_text().splitlines()


def sample_argv(port: int, proxy_url: str) -> list[str]:
    """A command line that passes every flag of the real parser."""
    special = {'--server-name': ['127.0.0.1'], '--server-port': [str(port)], '--tp': ['1'],
               '--max-batch-size': ['4'], '--proxy-url': [proxy_url], '--model-name': ['all-flags'],
               '--api-keys': ['sk-1', 'sk-2'], '--log-level': ['INFO'], '--backend': ['pytorch'],
               '--dp': ['1'], '--session-len': ['4096'], '--hf-overrides': ['{"a": 1}'],
               '--kv-transfer-config': ['{}'], '--quant-policy': ['fp8']}
    argv = []
    for line in real_flag_table():
        flag, nargs, *rest = line.split()
        meta = dict(item.split('=', 1) for item in rest)
        argv.append(flag)
        if nargs == '0':
            continue
        if flag in special:
            vals = special[flag]
        elif 'choices' in meta:
            vals = [str(next(c for c in json.loads(meta['choices']) if c is not None))]
        else:
            vals = [{'int': '2', 'float': '0.5'}.get(meta.get('type'), 'x')]
        argv += vals if nargs in ('*', '+') else vals[:1]
    return argv


def test_every_real_flag_accepted(launch):
    port = free_port()
    argv = sample_argv(port, 'http://127.0.0.1:1')      # nothing listens on :1
    s = launch(*argv, port=port)
    assert httpx.get(s.url + '/v1/models', headers={'Authorization': 'Bearer sk-2'}).json()['data'][0]['id'] \
        == 'all-flags'
    assert 'Service registration failed' in s.stdout         # proxy down: warning, keeps serving
    ns = ss.build_cli_parser().parse_args(['serve', 'api_server', 'm', *argv])
    assert ns.quant_policy == 16 and ns.async_ == 0 and ns.hf_overrides == {'a': 1}
    # like the real FlexibleArgumentParser: underscores and dotted dict flags
    ns = ss.build_cli_parser().parse_args(['serve', 'api_server', 'm', '--server_port', '7',
                                           '--hf-overrides.rope_scaling.factor', '2'])
    assert ns.server_port == 7 and ns.hf_overrides == {'rope_scaling': {'factor': 2}}
    assert ns.max_batch_size is None and ns.api_keys is None and ns.tp == 1


@pytest.mark.parametrize('extra, message', [
    (['--no-such-flag'], 'lmdeploy: error: unrecognized arguments: --no-such-flag'),
    (['--backend', 'vllm'], "lmdeploy serve api_server: error: argument --backend: invalid choice: 'vllm'"),
    (['--tp', 'two'], "argument --tp: invalid int value: 'two'"),
    (['--async', '3'], 'argument --async: invalid choice: 3'),
])
def test_invalid_command_lines_exit_2(extra, message):
    # same messages as the real 0.18 CLI
    p = subprocess.run([str(EXE), 'serve', 'api_server', 'm', *extra], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode == 2
    assert message in p.stderr


def test_missing_model_path_and_version():
    p = subprocess.run([str(EXE), 'serve', 'api_server'], capture_output=True, text=True, timeout=20)
    assert p.returncode == 2 and 'model_path' in p.stderr
    for flag in ('--version', '-v'):
        p = subprocess.run([str(EXE), flag], capture_output=True, text=True, timeout=20)
        assert p.returncode == 0 and p.stdout.strip() == '0.18.0+standin'


# ---------------------------------------------------------------------------
# proxy registration
# ---------------------------------------------------------------------------
def test_registers_with_proxy_before_binding(launch):
    node_port = free_port()
    received: list[dict] = []

    class FakeProxy(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
            received.append({'path': self.path, 'body': body, 'content_type': self.headers['Content-Type'],
                             'node_port_open': port_open('127.0.0.1', node_port)})
            data = b'"Added successfully"'
            self.send_response(200)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    proxy = http.server.ThreadingHTTPServer(('127.0.0.1', 0), FakeProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        s = launch('--model-name', 'qwen-test', '--api-keys', 'sk-x',
                   '--proxy-url', f'http://127.0.0.1:{proxy.server_address[1]}', port=node_port)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert len(received) == 1
    r = received[0]
    assert r['path'] == '/nodes/add' and r['content_type'] == 'application/json'
    assert r['body'] == {'url': f'http://127.0.0.1:{node_port}', 'status': {'models': ['qwen-test'], 'role': 1}}
    assert r['node_port_open'] is False      # real 0.18 registers in the lifespan hook, before binding
    assert 'Service registration failed' not in s.stdout
