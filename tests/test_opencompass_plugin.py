"""lmeval's OpenCompass model class (src/lmeval/opencompass_plugin), built by the installed
OpenCompass in its own venv, as lmeval's configs have OpenCompass build it.

What it promises the benchmark numbers rest on: every request is sent by one event loop thread
(request threads each on their own socket pile up at the GIL, bench/inference_bench.py
--sections gil) through one aiohttp session, which keeps as many connections as were in flight
at once and reuses them, OpenAISDK really sends through `openai_client` (else the loop would
silently be bypassed by an OpenCompass upgrade), and the garbage collector is frozen once the
model is built. And of the runner: each
task is forked from OpenCompass's process with its own log, params file and exit code.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import venv_python
from toolkit import REPO
from lmeval.ocenv import opencompass_env

# A chat server for the probes, answering REPLIES[path] (HTTP 200) after DELAY seconds; the probe
# sets both. It notes each request's path and the client's address.
SERVER = r"""
import http.server, json, threading, time
requests = []  # (path, the client's (address, port)) of each request read

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        requests.append((self.path, self.client_address))
        time.sleep(DELAY)
        body = json.dumps(REPLIES[self.path]).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
ANSWER = {"id": "1", "object": "chat.completion", "created": 0, "model": "demo-chat",
          "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Paris"}}]}
"""

PROBE = SERVER + r"""
import gc, inspect, sys
import aiohttp
from lmeval_opencompass import LmevalOpenAISDK  # as lmeval's configs import it
from opencompass.models import OpenAISDK

REPLIES = {"/v1/chat/completions": ANSWER}
DELAY = 0.3  # long enough for every asking thread to be in flight at once
model = LmevalOpenAISDK(path="demo-chat", key="sk-test", openai_api_base=f"http://127.0.0.1:{server.server_address[1]}/v1",
                        tokenizer_path=sys.argv[1], max_seq_len=4096, query_per_second=1000, retry=1)
frozen = gc.get_freeze_count()
sent = []  # (the thread that sent it, its session)
request = aiohttp.ClientSession._request

async def recording_request(self, *args, **kwargs):
    sent.append((threading.current_thread().name, id(self)))
    return await request(self, *args, **kwargs)

aiohttp.ClientSession._request = recording_request
answers = []

def ask():
    reply = model.openai_client.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": "Hi"}])
    answers.append(reply.choices[0].message.content)

for _ in range(2):  # the second round on the first round's idle connections
    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
print(json.dumps({
    "frozen": frozen,
    "answers": len(answers),
    "sending_threads": sorted({name for name, _ in sent}),
    "sessions": len({session for _, session in sent}),
    "connections": len({client for _, client in requests}),
    "sends_through_openai_client": "self.openai_client.chat.completions.create" in inspect.getsource(OpenAISDK._generate),
}))
"""


def run_probe(code: str) -> tuple[dict, str]:
    """Run CODE in OpenCompass's venv as lmeval runs OpenCompass (the plugin on PYTHONPATH), with
    the demo model's tokenizer as its argument; its last stdout line as JSON, and all it printed."""
    tokenizer = REPO / "examples" / "sample" / "models" / "demo-chat"
    done = subprocess.run([str(venv_python("opencompass")), "-c", code, str(tokenizer)], capture_output=True,
                          text=True, timeout=300, env=opencompass_env(dict(os.environ)), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout + done.stderr


@pytest.mark.opencompass
def test_one_event_loop_sends_every_request_through_one_session_reusing_its_connections():
    report, _ = run_probe(PROBE)
    assert report == {"frozen": report["frozen"], "answers": 16, "sending_threads": ["lmeval-requests"],
                      "sessions": 1, "connections": 8, "sends_through_openai_client": True}
    assert report["frozen"] > 10_000  # torch and transformers objects, out of every collection


DEAD_NODE_PROBE = SERVER + r"""
import sys
from lmeval_opencompass import LmevalOpenAISDK

# as LMDeploy's proxy answers for a dead node: HTTP 200
REPLIES = {"/dead/v1/chat/completions": {"error_code": 10402, "text": "Failed to get response after a period of time"},
           "/alive/v1/chat/completions": ANSWER}
DELAY = 0
outcome = {}
for node in ("dead", "alive"):
    model = LmevalOpenAISDK(path="demo-chat", key="sk-test", openai_api_base=f"http://127.0.0.1:{server.server_address[1]}/{node}/v1",
                            tokenizer_path=sys.argv[1], max_seq_len=4096, query_per_second=1000, retry=3)
    try:
        outcome[node] = model._generate("What is the capital of France?", 16, 0.0)
    except RuntimeError as error:
        outcome[node] = f"{type(error).__name__}: {error}"
print(json.dumps({"outcome": outcome, "sent": [path for path, _ in requests]}))
"""


@pytest.mark.opencompass
def test_a_dead_node_behind_the_proxy_is_a_failed_request_not_an_answer():
    report, printed = run_probe(DEAD_NODE_PROBE)
    assert report["outcome"] == {
        "dead": "RuntimeError: Calling OpenAI API failed after retrying for 3 times. Check the logs for details.",
        "alive": "Paris",
    }
    assert report["sent"] == ["/dead/v1/chat/completions"] * 3 + ["/alive/v1/chat/completions"]
    assert "LMDeploy's proxy answered error_code 10402" in printed


RUNNER_PROBE = r"""
import json, os, sys, tempfile
from lmeval_fork import PR_SET_NAME, prctl
from lmeval_opencompass import LmevalLocalRunner

prctl(PR_SET_NAME, b"opencompass")  # as a forked OpenCompass is named
folder = tempfile.mkdtemp()
os.chdir(folder)
script = os.path.join(folder, "task_script.py")
with open(script, "w") as handle:
    handle.write("import json, os, sys\n"
                 "print(json.dumps({'parent': os.getppid(), 'argv': sys.argv, 'name': __name__,"
                 " 'comm': open('/proc/self/comm').read().strip(),"
                 " 'params': open(sys.argv[1]).read()}))\n"
                 "sys.exit(int(sys.argv[1].endswith('_params.py')) * 3)\n")


class Params:
    def dump(self, path):
        with open(path, "w") as handle:
            handle.write("answer = 42\n")


class Task:
    name, num_gpus, cfg = "demo-chat/capitals", 0, Params()

    def get_command(self, cfg_path, template):
        return template.format(task_cmd=f"{sys.executable} {script} {cfg_path}")

    def get_log_path(self, file_extension):
        return os.path.join(folder, "logs", "infer", f"capitals.{file_extension}")


runner = LmevalLocalRunner(task=dict(type="OpenICLInferTask"), max_num_workers=1)
status = runner._launch(Task(), [], 0)
log = open(Task().get_log_path("out")).read()
print(json.dumps({"me": os.getpid(), "status": list(status), "task": json.loads(log.splitlines()[0]),
                  "left_in_tmp": os.listdir(os.path.join(folder, "tmp"))}))
"""


@pytest.mark.opencompass
def test_the_runner_forks_each_task_from_its_process_and_keeps_its_log_and_exit_code():
    report, _ = run_probe(RUNNER_PROBE)
    task = report["task"]
    assert report["status"] == ["demo-chat/capitals", 3]
    assert task["parent"] == report["me"]  # forked, not a shell's child nor a new Python's
    assert task["name"] == "__main__" and task["argv"][1].endswith("_params.py")
    assert task["comm"] == "python"  # as the `python TASK_SCRIPT PARAMS` it stands for
    assert task["params"] == "answer = 42\n"
    assert report["left_in_tmp"] == []  # the task's params are removed once it ended, as LocalRunner does
