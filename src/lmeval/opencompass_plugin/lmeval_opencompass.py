"""Runs inside OpenCompass's processes (its venv), never in lmeval's: lmeval puts this folder on
OpenCompass's PYTHONPATH and names the class in the configs it writes.

`LmevalOpenAISDK` is OpenAISDK with two changes that keep every request slot of the server
busy (both measured with bench/inference_bench.py on 2 cores):

- Every request is sent and read by one asyncio event loop per task process (RequestLoop), not
  by the request thread that asks it. OpenCompass's concurrent task asks with one thread per
  request in flight (1,536 at LMDeploy's default 1,024 slots); a thread blocking on its own
  socket wakes when its answer arrives and queues for the GIL. When one thread holds the GIL a
  while (a full garbage collection, a slow C call), answers keep coming, and past about 1,000
  queued threads on 2 cores, each waking every 5 ms (CPython's switch interval), they take the
  CPU from the holder: a 15 s hold took 147 s, and about one `lmeval infer` in 16 stalled for
  minutes. Here a request thread waits on a future, which costs no GIL: during a hold only the
  loop's thread and OpenCompass's own few queue (about 13 on average against 230 for a thread
  per socket, tests/test_gil_hold.py), and afterwards the loop hands answers to their threads
  as fast as it reads them (bench/inference_bench.py --sections gil). One aiohttp session
  holds the connections (one httpcore pool shared by all requests rescans every connection,
  twice per request, in time that grows with the square of the idle ones, and the client fell
  to a third of the server's slots), and a request costs 1.7-2 ms of CPU in all, against 3.4
  ms with a thread per socket through the openai SDK.
- The garbage collector is frozen once the model is built (after every import of the task
  process, before any request): otherwise each full collection walks torch's and transformers'
  objects too, 0.3-0.4 s with the GIL held.

And one that keeps answers honest: LMDeploy's proxy answers a request it could not deliver (a
node that died, whose health check has not yet dropped it) with HTTP 200 and a body
`{"error_code": 10402, "text": ...}`. That is a failed request, raised as one (OpenAISDK then
retries it), never an answer.

For the model under test (`answers_log` set in the inference config) it keeps what OpenCompass
drops: each prompt's finish reason, token counts, time and tries, one line in the run's answer log
(lmeval_answers). And a prompt over the server's session length is answered once, empty, and
recorded as `prompt too long`: LMDeploy 0.18 refuses it with HTTP 400, older servers answer it
empty with finish reason `length`, and OpenAISDK would send it `retry` times, then fail the
dataset. (The judge keeps OpenAISDK's way: a judge prompt too long fails its dataset loudly.)

`LmevalIFEvaluator` is IFEval's evaluator with details that say which instruction an answer
failed, for `lmeval report`.

`LmevalLocalRunner` is OpenCompass's LocalRunner with each task forked from the OpenCompass
process that runs it (lmeval_fork), which has imported what the task imports, instead of
started as a new Python that imports it all again: 7-8 s of CPU a task before its first
request, as long again as the whole stage on a small dataset. The task runs its script as
the new process would (`python TASK_SCRIPT PARAMS`, as `__main__`), its output in the same
log, its exit code waited for the same way. Tasks that need GPUs (torchrun) start as before.
"""
import asyncio
import atexit
import gc
import json
import os
import random
import runpy
import shlex
import sys
import threading
import time
import uuid
from functools import partial
from types import SimpleNamespace

import aiohttp
import httpx
import mmengine
from openai import (APIConnectionError, APIStatusError, APITimeoutError, AuthenticationError, BadRequestError,
                    ConflictError, InternalServerError, NotFoundError, PermissionDeniedError, RateLimitError,
                    UnprocessableEntityError)
from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from opencompass.datasets import IFEvaluator
from opencompass.models import OpenAISDK
from opencompass.registry import ICL_EVALUATORS, MODELS, RUNNERS
from opencompass.runners import LocalRunner
from opencompass.utils import get_logger

from lmeval_answers import PROMPT_TOO_LONG, TOO_LONG_MESSAGE, AnswerLog
from lmeval_fork import fork_child


class ProxyError(RuntimeError):
    """A request the proxy could not deliver, though it answered HTTP 200."""


class RequestLoop:
    """One asyncio event loop thread per process, which sends every request and reads every
    answer through one aiohttp session (its pool finds an idle connection in constant time);
    the asking threads wait on futures, which costs no GIL. Started on the first request, and
    again in a forked child (a loop thread does not survive a fork).

    It speaks OpenAI's chat API as the openai SDK's client does, at a fifth of its CPU: the
    reply as the SDK's `ChatCompletion`, an HTTP error as the SDK's exception of its status,
    and the SDK's retries (connection failures, 408, 409, 429 and 5xx: twice, after 0.5 s and
    1 s less up to a quarter). The SDK's own async client spent 3-4 ms of CPU a request on
    transforming its arguments and on anyio; at 1,024 slots that was more than one CPU."""

    RETRIES = 2

    def __init__(self, url, api_key, timeout, ssl_context):
        self.url = url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        self._loop = None
        self._pid = None
        self._session = None

    def create(self, *, timeout=None, extra_body=None, **body):
        """`chat.completions.create(...)`, sent from the loop; the caller waits for the reply."""
        payload = json.dumps({**body, **(extra_body or {})}, ensure_ascii=False).encode()
        coroutine = self._post(payload, timeout or self.timeout)
        return asyncio.run_coroutine_threadsafe(coroutine, self._running_loop()).result()

    def _running_loop(self):
        with self._lock:
            if self._pid != os.getpid():
                self._loop, self._pid, self._session = asyncio.new_event_loop(), os.getpid(), None
                threading.Thread(target=self._loop.run_forever, name="lmeval-requests", daemon=True).start()
                atexit.register(self._close, self._loop)
            return self._loop

    def _close(self, loop):
        """The session closed at exit, on its loop (else aiohttp prints every open connection)."""
        if self._session is not None and loop is self._loop:
            asyncio.run_coroutine_threadsafe(self._session.close(), loop).result(timeout=10)

    async def _post(self, payload, timeout):
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, ssl=self.ssl_context)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=True)
        for attempt in range(self.RETRIES + 1):
            last = attempt == self.RETRIES
            try:
                async with self._session.post(self.url, data=payload, headers=self.headers,
                                              timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
                    status, headers, content = reply.status, dict(reply.headers), await reply.read()
            except asyncio.TimeoutError as error:
                if last:
                    raise APITimeoutError(request=httpx.Request("POST", self.url)) from error
            except aiohttp.ClientError as error:
                if last:
                    raise APIConnectionError(request=httpx.Request("POST", self.url)) from error
            else:
                if status < 400:
                    return ChatCompletion.construct(**json.loads(content))
                if last or not (status in (408, 409, 429) or status >= 500):
                    raise _status_error(self.url, status, headers, content)
            await asyncio.sleep(0.5 * 2 ** attempt * (1 - 0.25 * random.random()))
        raise AssertionError("unreachable: the last attempt returns or raises")


def _status_error(url, status, headers, content):
    """The openai SDK's exception for an HTTP error reply, as its client raises it."""
    try:
        body = json.loads(content)
    except ValueError:
        body = content.decode("utf-8", "replace")
    response = httpx.Response(status, headers=headers, content=content, request=httpx.Request("POST", url))
    error_class = STATUS_ERRORS.get(status, InternalServerError if status >= 500 else APIStatusError)
    return error_class(f"Error code: {status} - {body}", response=response, body=body)


STATUS_ERRORS = {400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
                 409: ConflictError, 422: UnprocessableEntityError, 429: RateLimitError}


@MODELS.register_module()
class LmevalOpenAISDK(OpenAISDK):
    def __init__(self, *args, answers_log=None, **kwargs):
        self._answers = AnswerLog(answers_log) if answers_log else None
        super().__init__(*args, **kwargs)
        self._requests = RequestLoop(self.openai_api_base, self._next_valid_key(), self.timeout,
                                     httpx.create_ssl_context())
        gc.collect()
        gc.freeze()

    def _create_fresh_client(self):
        """None: OpenAISDK's client is never used; the loop sends every request."""
        return None

    def _checked_create(self, *args, **kwargs):
        """A request sent through the loop, its reply checked (and recorded in the answer log)."""
        asking = self._answers.asking if self._answers else None
        if asking is not None:
            asking.tries += 1
        try:
            response = self._requests.create(*args, **kwargs)
        except BadRequestError as error:
            if asking is None or TOO_LONG_MESSAGE not in str(error):
                raise
            asking.finish_reason = PROMPT_TOO_LONG
            return self._empty_reply()
        code = getattr(response, "error_code", None)
        if code is not None:
            raise ProxyError(f"LMDeploy's proxy answered error_code {code} "
                             f"({getattr(response, 'text', '')!r}): the node it chose did not answer")
        if asking is not None:
            asking.replied(response)
            if asking.finish_reason == "length" and not _said(response):
                asking.finish_reason = PROMPT_TOO_LONG  # an older server's way of refusing it
                response.choices[0].finish_reason = "stop"
        return response

    def _generate(self, input, max_out_len, temperature):
        if self._answers is None:
            return super()._generate(input, max_out_len, temperature)
        self._answers.ask(max_out_len)
        answer = None
        try:
            answer = super()._generate(input, max_out_len, temperature)
            return answer
        finally:
            self._answers.write(input, answer)

    def _empty_reply(self):
        """An empty answer that stopped: OpenAISDK takes it as the answer, at once (it retries
        any other empty reply, then fails the dataset)."""
        message = ChatCompletionMessage(role="assistant", content="")
        return ChatCompletion(id="lmeval-prompt-too-long", created=int(time.time()), model=self.path,
                              object="chat.completion", choices=[Choice(finish_reason="stop", index=0, message=message)])

    @property
    def openai_client(self):
        """What OpenAISDK sends through (`openai_client.chat.completions.create`): the loop."""
        return SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=self._checked_create)))

    @openai_client.setter
    def openai_client(self, client):
        """OpenAISDK.__init__ stores its client here: there is none (_create_fresh_client)."""


def _said(response):
    """Whether RESPONSE holds any text (content or reasoning)."""
    message = response.choices[0].message if response.choices else None
    return bool(getattr(message, "content", None) or getattr(message, "reasoning_content", None))


@ICL_EVALUATORS.register_module()
class LmevalIFEvaluator(IFEvaluator):
    """IFEval's evaluator, whose details also say which of its instructions each answer followed
    (`follow_instruction_list`, strict, and `follow_instruction_list_loose`, each aligned with the
    sample's `instruction_id_list`): OpenCompass keeps only whether all of them were. The lists
    are the very ones OpenCompass's checks compute for the score, caught as they return; the
    scores are OpenCompass's."""

    def score(self, predictions, references, origin_prompt):
        module = sys.modules[IFEvaluator.__module__]
        checks = {"strict": module.test_instruction_following_strict, "loose": module.test_instruction_following_loose}
        followed = {kind: [] for kind in checks}

        def recording(kind):
            def check(example, response):
                outcome = checks[kind](example, response)
                followed[kind].append(list(outcome.follow_instruction_list))
                return outcome
            return check

        module.test_instruction_following_strict = recording("strict")
        module.test_instruction_following_loose = recording("loose")
        try:
            results = super().score(predictions, references, origin_prompt)
        finally:
            module.test_instruction_following_strict = checks["strict"]
            module.test_instruction_following_loose = checks["loose"]
        for index, detail in enumerate(results["details"].values()):
            detail["follow_instruction_list"] = followed["strict"][index]
            detail["follow_instruction_list_loose"] = followed["loose"][index]
        return results


@RUNNERS.register_module()
class LmevalLocalRunner(LocalRunner):
    def _launch(self, task, gpu_ids, index):
        if task.num_gpus > 0:
            return super()._launch(task, gpu_ids, index)
        mmengine.mkdir_or_exist("tmp/")
        param_file = f"{os.getcwd()}/tmp/{uuid.uuid4()}_params.py"
        try:
            task.cfg.dump(param_file)
            argv = shlex.split(task.get_command(cfg_path=param_file, template="{task_cmd}"))
            if len(argv) != 3 or argv[0] != sys.executable:
                return super()._launch(task, gpu_ids, index)
            out_path = task.get_log_path(file_extension="out")
            mmengine.mkdir_or_exist(os.path.dirname(out_path))
            environ = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpu_ids))}
            pid = fork_child(partial(run_script, argv[1:]), out_path, new_session=False, truncate=True,
                             environ=environ, name=os.path.basename(argv[0]))
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                get_logger().error(f"task {task.name} fail, see\n{out_path}")
        finally:
            if not self.keep_tmp_file and os.path.exists(param_file):
                os.remove(param_file)
        return task.name, code


def run_script(argv):
    """`python SCRIPT ARGS...`, in this process."""
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")
