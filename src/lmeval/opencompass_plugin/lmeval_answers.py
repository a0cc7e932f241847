"""What each answer of the model under test says beyond its text, kept where OpenCompass drops
it: the server's finish reason (an answer cut at max_out_len reads `length`), its token counts
(reasoning tokens where the server gives them), the seconds it took and the tries it needed.

Standard library only: it runs in OpenCompass's processes (lmeval_opencompass records with
it), and lmeval reads the log with the same `key` (lmeval.answers).

One JSON line per prompt, appended (and flushed) as each answer arrives, so a log cut short by a
crash holds every answer before it. A line names its prompt and answer by digest: lmeval joins
them to OpenCompass's predictions, which hold the same prompt and text.
"""
import hashlib
import json
import threading
import time

PROMPT_TOO_LONG = "prompt too long"  # the finish reason lmeval records for a prompt over the session length
# LMDeploy 0.18 refuses such a prompt with HTTP 400 and this message; older servers answer it
# with an empty reply and finish_reason `length`.
TOO_LONG_MESSAGE = "must be smaller than the model context length"


def key(value):
    """A short digest of a prompt (OpenCompass's prompt list or a string) or an answer."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


class Asking:
    """One prompt being asked, over its tries: what the last reply said."""

    def __init__(self, max_out_len):
        self.started = time.monotonic()
        self.max_out_len = max_out_len
        self.tries = 0
        self.finish_reason = None
        self.usage = None

    def replied(self, response):
        choice = response.choices[0] if getattr(response, "choices", None) else None
        self.finish_reason = getattr(choice, "finish_reason", None)
        self.usage = getattr(response, "usage", None)

    def record(self, prompt, answer):
        usage = self.usage
        details = getattr(usage, "completion_tokens_details", None)
        return {
            "prompt": key(prompt), "answer": key(answer) if answer is not None else None,
            "finish_reason": self.finish_reason if answer is not None else "error",
            "prompt_tokens": getattr(usage, "prompt_tokens", None),
            "completion_tokens": getattr(usage, "completion_tokens", None),
            "reasoning_tokens": getattr(details, "reasoning_tokens", None),
            "seconds": round(time.monotonic() - self.started, 3), "tries": self.tries,
            "max_out_len": self.max_out_len,
        }


class AnswerLog:
    """PATH, appended to by every request thread of a task."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.local = threading.local()

    @property
    def asking(self):
        """The calling thread's prompt, if it is asking one."""
        return getattr(self.local, "asking", None)

    def ask(self, max_out_len):
        self.local.asking = Asking(max_out_len)
        return self.local.asking

    def write(self, prompt, answer):
        """Record the calling thread's prompt and its ANSWER (None: it failed)."""
        asking = self.local.asking
        self.local.asking = None
        line = json.dumps(asking.record(prompt, answer), ensure_ascii=False) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as log:
            log.write(line)
