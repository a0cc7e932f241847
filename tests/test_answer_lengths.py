"""What the answers say, end to end through the real OpenCompass and the stand-in: answers of
lengths the key sets, cut by the server at --max-out-len (finish_reason `length`), a prompt over
the server's --session-len (LMDeploy 0.18 refuses it with HTTP 400), and a run derived with
--retry-truncated. Every number is computed here from the key's lengths, never read from a run."""

from __future__ import annotations

import json
import statistics
from collections import Counter

import pytest

from toolkit import MODELS, TOOLS, leftovers, only_run, shown_scores

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

RUN_SECONDS = 600
LIMIT, LARGER = 100, 250
SESSION_LEN = 400
# question -> (gold letter, the answer's length in tokens); the stand-in replies the gold letter
# after that much reasoning. The last prompt is over the session length.
LENGTHS = {"Q1": 10, "Q2": 40, "Q3": 80, "Q4": 120, "Q5": 200, "Q6": 300}
LONG = "Q7"
GOLD = {"Q1": "A", "Q2": "B", "Q3": "A", "Q4": "B", "Q5": "A", "Q6": "B", LONG: "A"}


def write_inputs(folder):
    folder.mkdir()
    rows = [{"question": f"{q}: pick {GOLD[q]}" + (" word" * (SESSION_LEN + 50) if q == LONG else ""),
             "A": "yes", "B": "no", "answer": GOLD[q]} for q in GOLD]
    data = folder / "long.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    key = folder / "key.json"
    key.write_text(json.dumps([{"match": f"{q}: ", "reply": f"The answer is {GOLD[q]}.",
                                "tokens": LENGTHS.get(q, 10)} for q in GOLD]))
    return data, key


def sent(log) -> Counter:
    """How often each question reached the model, from the stand-in's request log."""
    counts = Counter()
    for body in map(json.loads, log.read_text().splitlines()):
        text = body["messages"][-1]["content"]
        counts[next(q for q in GOLD if f"{q}: " in text)] += 1
    return counts


def expected(limit: int) -> dict:
    """The answer statistics and score the key implies at LIMIT: an answer longer than the
    limit is cut there (and loses its letter); the prompt over the session length is answered
    empty, once."""
    tokens = sorted(min(length, limit) for length in LENGTHS.values())
    cut = sum(length > limit for length in LENGTHS.values())
    return {"cut": cut, "recorded": len(GOLD), "too_long": 1, "empty": 1, "tokens_max": tokens[-1],
            "tokens_median": statistics.median(tokens), "tokens_mean": round(statistics.fmean(tokens), 1),
            "score": 100 * (len(LENGTHS) - cut) / len(GOLD)}


def test_cut_answers_a_prompt_too_long_and_a_retry_of_only_the_cut(tmp_path, lmeval_runner):
    data, key = write_inputs(tmp_path / "in")
    work_dir, requests = tmp_path / "out", tmp_path / "requests.jsonl"
    env = lmeval_runner.env(STANDIN_ANSWER_KEY=str(key), STANDIN_REQUEST_LOG=str(requests))
    common = [str(MODELS / "demo-chat"), "--dataset", str(data), "--gpus", "0", "--server-args",
              f"--session-len {SESSION_LEN}", "-w", str(work_dir), *TOOLS]
    first = lmeval_runner.run("run", *common, "--max-out-len", str(LIMIT), env=env, work_dir=work_dir,
                              timeout=RUN_SECONDS)
    assert first.poll() == 0, first.transcript()
    want = expected(LIMIT)
    assert shown_scores(first.stdout) == {"long": pytest.approx(want["score"], abs=0.005)}
    assert sent(requests) == Counter(dict.fromkeys(GOLD, 1))  # the prompt too long was sent once, not retried
    run_dir = only_run(work_dir)
    stats = json.loads((run_dir / "lmeval.json").read_text())["answers"]["long"]
    assert {name: stats[name] for name in want if name != "score"} == {k: v for k, v in want.items() if k != "score"}
    share = want["cut"] / len(GOLD)
    assert (f"lmeval: warning: long: {share:.0%} of answers reached --max-out-len {LIMIT}; its score is a lower "
            "bound") in first.stderr_lines

    requests.unlink()
    derived = lmeval_runner.run("infer", *common, "--max-out-len", str(LARGER), "--reuse", run_dir.name,
                                "--retry-truncated", env=env, work_dir=work_dir, timeout=RUN_SECONDS)
    assert derived.poll() == 0, derived.transcript()
    # Exactly the answers cut at the old limit were asked again.
    assert sent(requests) == Counter({q: 1 for q, length in LENGTHS.items() if length > LIMIT})
    new_dir = next(path for path in work_dir.iterdir() if path.is_dir() and path != run_dir)
    manifest = json.loads((new_dir / "lmeval.json").read_text())
    assert manifest["derived_from"]["run"] == run_dir.name and manifest["derived_from"]["max_out_len"] == LIMIT
    assert len(manifest["derived_from"]["retried"]["long"]) == want["cut"]
    again = expected(LARGER)
    assert {name: manifest["answers"]["long"][name] for name in again if name != "score"} == \
        {k: v for k, v in again.items() if k != "score"}
    judged = lmeval_runner.run("judge", "--reuse", new_dir.name, "-w", str(work_dir), *TOOLS, env=env,
                               work_dir=work_dir, timeout=RUN_SECONDS)
    assert judged.poll() == 0, judged.transcript()
    assert shown_scores(judged.stdout) == {"long": pytest.approx(again["score"], abs=0.005)}
    assert leftovers([work_dir]) == []
