"""Runs inside OpenCompass's processes (its venv), never in lmeval's: lmeval puts this folder on
OpenCompass's PYTHONPATH and names the class in the configs it writes.

`LmevalOpenAISDK` is OpenAISDK with two changes that keep every request slot of the server
busy (both measured with bench/inference_bench.py on 2 cores):

- One HTTP client per request thread, instead of one shared by all of them. OpenAISDK's shared
  httpx client keeps every connection in one httpcore pool, and httpcore 1.0 rescans the whole
  pool under one lock, twice per request, in time that grows with the square of the idle
  connections. With some 200 threads, a few seconds in which answers come back faster than
  new requests go out leave many connections idle; each request then holds the lock longer,
  fewer requests are out, more connections go idle, and the client falls to a third of the
  server's slots for seconds (seen: 56-70% busy). A thread's own client holds one connection.
  The clients share one TLS context: making one per client costs 30 ms, and 200 of them at
  start-up held the client below the server's slots for two seconds.
- The garbage collector is frozen once the model is built (after every import of the task
  process, before any request): otherwise each full collection walks torch's and transformers'
  objects too, 0.3-0.4 s with every request thread stopped.

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
import gc
import os
import runpy
import shlex
import sys
import threading
import time
import uuid
from functools import partial

import httpx
import mmengine
from openai import BadRequestError
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


@MODELS.register_module()
class LmevalOpenAISDK(OpenAISDK):
    def __init__(self, *args, http_client_cfg=None, answers_log=None, **kwargs):
        self._clients = threading.local()  # OpenAISDK.__init__ already sets openai_client
        self._answers = AnswerLog(answers_log) if answers_log else None
        http_client_cfg = {"verify": httpx.create_ssl_context(), **(http_client_cfg or {})}
        super().__init__(*args, http_client_cfg=http_client_cfg, **kwargs)
        gc.collect()
        gc.freeze()

    def _create_fresh_client(self):
        client = super()._create_fresh_client()
        completions = client.chat.completions
        create = completions.create

        def checked(*args, **kwargs):
            asking = self._answers.asking if self._answers else None
            if asking is not None:
                asking.tries += 1
            try:
                response = create(*args, **kwargs)
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

        completions.create = checked
        return client

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
        """The calling thread's own client, made on its first request."""
        client = getattr(self._clients, "client", None)
        if client is None:
            client = self._clients.client = self._create_fresh_client()
        return client

    @openai_client.setter
    def openai_client(self, client):
        self._clients.client = client


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
