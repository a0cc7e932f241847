"""How fast is `lmeval report` on a run of 10,000 samples, and how fast does its page first show
rows in a browser? (goals: the page written in under 2 s, its first rows rendered in under 1 s)

First writes a synthetic run folder into a temporary work dir (or `-w DIR`), in the layout the
real OpenCompass 0.5.4 leaves and lmeval.samples reads: a judged dataset of --samples prompts
(default 10,000; a reasoning model's answers with `<think>` reasoning, the judge's replies in
`results/MODEL/DATASET_replica0.json`, a few of them neither A nor B, and the results file's
details grouped by question), a rule-scored dataset of a tenth of that, a judged dataset of 30
questions asked 32 times each (AIME's layout: a reply file per run), the summary CSV and lmeval's
manifest with each score's standard error (as the eval stage records them). Then, as a user
runs it:

  write         `lmeval report` (the installed script in .venvs/lmeval) N times (default 5),
                interleaved with two anchors: the same venv's bare Python start-up
                (`python -c pass`) and `lmeval results` on the same run;
  first render  the page opened from disk in Debian's headless chromium N times: the time from
                navigation start to the first rows rendered (`window.lmevalFirstRender`, which
                the page's script sets once each table shows its first page), and to the first
                contentful paint;
  filter        on the 10,000-sample table: "wrong only" ticked, and a search, each from the
                event to the table redrawn (information, no goal).

Prints the median and max of each, the ratio of each median to the anchor's, and exits 1 if a
max misses its goal.

Run it from the repository root (about a minute on 2 CPU cores):
  .venvs/lmeval/bin/python bench/report_bench.py [-n N] [--samples N] [-w DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from browser import headless_chromium  # noqa: E402 - the browser tests' chromium, started and ended alike
from cli_startup import interleaved_times  # noqa: E402 - bench/ is on the path: this script runs from there
VENV_BIN = REPO / ".venvs" / "lmeval" / "bin"
WRITE_GOAL, RENDER_GOAL = 2.0, 1.0  # seconds
RUN_ID, MODEL = "20250101_120000", "bench-chat"
JUDGED, RULED, REPEATED = "open_qa", "choices", "aime_like"
REPEATED_QUESTIONS, RUNS = 30, 32

# The grader prompt OpenCompass sends the judge (generic_llmjudge), shortened: each reply file
# holds one per sample, so reading it costs what it costs in a real run.
GRADER = ("You are a helpful assistant who evaluates the correctness and quality of models' outputs.\n"
          + "Please as a grading expert, judge whether the final answers given by the candidates below are "
            "consistent with the standard answers. " * 12
          + "\n<Original Question Begin>: \n{question}\n<Original Question End>\n"
            "<Gold Target Begin>: \n{gold}\n<Gold Target End>\n<Predicted Answer Begin>: \n{answer}\n<Predicted End>\n")
WORDS = ("the of model answer value prime number sum river city year energy matrix proof limit graph "
         "vector protein market theorem integral orbit species enzyme circuit").split()


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def stderr(shares: list[float]) -> float:
    """The standard error over questions lmeval records: 100 x sd(shares right) / sqrt(questions)."""
    return 100 * statistics.stdev(shares) / len(shares) ** 0.5


def grader(question: str, gold: str, answer: str) -> list[dict]:
    return [{"role": "HUMAN", "prompt": GRADER.format(question=question, gold=gold, answer=answer)}]


def write_repeated(run_dir: Path, rng: random.Random) -> list[float]:
    """REPEATED_QUESTIONS questions asked RUNS times, judged: each question's share right."""
    questions = [(f"Problem {index}: {text(rng, rng.randint(40, 120))}?", str(rng.randint(0, 999)))
                 for index in range(REPEATED_QUESTIONS)]
    skill = [rng.random() for _ in questions]
    predictions, details = {}, [{"example_abbr": f"{REPEATED}_{index}", "origin_prompt": [], "prediction": [],
                                 "gold": []} for index in range(len(questions))]
    for run in range(RUNS):
        replies = {}
        for index, (question, gold) in enumerate(questions):
            answer = gold if rng.random() < skill[index] else str(rng.randint(0, 999))
            predictions[str(run * len(questions) + index)] = {
                "origin_prompt": [{"role": "HUMAN", "prompt": question}], "gold": gold,
                "prediction": f"<think>{text(rng, rng.randint(200, 600))}</think>\n\n\\boxed{{{answer}}}"}
            verdict = "A" if answer == gold else "B"
            replies[str(index)] = {"origin_prompt": grader(question, gold, answer), "prediction": verdict, "gold": gold}
            for field, value in (("origin_prompt", replies[str(index)]["origin_prompt"]), ("prediction", verdict),
                                 ("gold", gold)):
                details[index][field].append(value)
        write_json(run_dir / "results" / MODEL / f"{REPEATED}_replica{run}.json", replies)
    write_json(run_dir / "predictions" / MODEL / f"{REPEATED}.json", predictions)
    shares = [entry["prediction"].count("A") / RUNS for entry in details]
    write_json(run_dir / "results" / MODEL / f"{REPEATED}.json", {
        f"accuracy ({RUNS} runs average)": 100 * statistics.fmean(shares), "details": details})
    return shares


def write_run(work_dir: Path, samples: int) -> Path:
    """A judged run of SAMPLES + SAMPLES // 10 prompts and a dataset asked RUNS times, as
    OpenCompass and lmeval leave it."""
    rng = random.Random(0)
    run_dir = work_dir / RUN_ID
    predictions, replies, verdicts, details = {}, {}, [], []
    for index in range(samples):
        question = f"Question {index}: {text(rng, rng.randint(60, 200))}?"
        gold = text(rng, rng.randint(1, 4))
        answer = gold if rng.random() < 0.62 else text(rng, rng.randint(1, 4))
        reasoning = text(rng, rng.randint(100, 400))
        predictions[str(index)] = {"origin_prompt": [{"role": "HUMAN", "prompt": question}],
                                   "prediction": f"<think>{reasoning}</think>\n\nThe answer is {answer}.", "gold": gold}
        verdict = ("A" if answer == gold else "B") if rng.random() > 0.01 else "I cannot judge this."
        verdicts.append(verdict)
        replies[str(index)] = {"origin_prompt": grader(question, gold, answer), "prediction": verdict, "gold": gold}
        details.append({"example_abbr": f"{JUDGED}_{index}", "origin_prompt": [replies[str(index)]["origin_prompt"]],
                        "prediction": [verdict], "gold": [gold]})
    write_json(run_dir / "predictions" / MODEL / f"{JUDGED}.json", predictions)
    write_json(run_dir / "results" / MODEL / f"{JUDGED}_replica0.json", replies)
    judged_score = 100 * verdicts.count("A") / samples
    write_json(run_dir / "results" / MODEL / f"{JUDGED}.json", {
        "accuracy": judged_score, "correct_count": verdicts.count("A"), "incorrect_count": verdicts.count("B"),
        "not_attempted_count": samples - verdicts.count("A") - verdicts.count("B"), "details": details})

    choices, details, right = {}, {"type": "GEN"}, []
    for index in range(samples // 10):
        prompt = (f"Answer the following multiple choice question. The last line of your response should be "
                  f"'ANSWER: $LETTER'.\n\n{text(rng, 40)}?\n\n" + "\n".join(f"{letter}) {text(rng, 3)}"
                                                                           for letter in "ABCD"))
        gold, replied = rng.choice("ABCD"), rng.choice("ABCD") if rng.random() < 0.3 else None
        replied = replied or gold
        right.append(float(replied == gold))
        choices[str(index)] = {"origin_prompt": [{"role": "HUMAN", "prompt": prompt}],
                               "prediction": f"The answer is {replied}.", "gold": gold}
        details[str(index)] = {"prompt": [{"role": "HUMAN", "prompt": prompt}], "origin_prediction":
                               f"The answer is {replied}.", "predictions": replied, "references": gold}
    ruled_score = 100 * statistics.fmean(right)
    write_json(run_dir / "predictions" / MODEL / f"{RULED}.json", choices)
    write_json(run_dir / "results" / MODEL / f"{RULED}.json", {"accuracy": ruled_score, "details": details})
    repeated = write_repeated(run_dir, rng)
    repeated_score = 100 * statistics.fmean(repeated)

    (run_dir / "summary").mkdir()
    with open(run_dir / "summary" / f"summary_{RUN_ID}.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["dataset", "version", "metric", "mode", MODEL])
        writer.writerows([[JUDGED, "5ddc62", "accuracy", "gen", f"{judged_score:.2f}"],
                          [RULED, "772ea0", "accuracy", "gen", f"{ruled_score:.2f}"],
                          [REPEATED, "5e9f4f", f"accuracy ({RUNS} runs average)", "gen", f"{repeated_score:.2f}"]])
    generation = {"temperature": 0.6, "max_out_len": 64000, "max_seq_len": 65536, "mode": "none", "retry": 10}
    started = time.time() - 3600
    write_json(run_dir / "lmeval.json", {
        "run_id": RUN_ID, "created": started, "command": ["lmeval", "run", f"/models/{MODEL}", "--task", "chat"],
        "inputs": {"model": f"/models/{MODEL}", "task": None, "datasets": None, "files": [], "name": None,
                   "generation": {**generation, "top_p": None, "extra_body": {"chat_template_kwargs": {
                       "enable_thinking": True}}}},
        "model_abbr": MODEL, "fingerprint": "0" * 64,
        "fingerprint_inputs": {"model": f"/models/{MODEL}", "abbr": MODEL, "generation": generation,
                               "datasets": [["file", JUDGED, "qa", "0" * 64], ["file", RULED, "mc", "1" * 64],
                                            ["file", REPEATED, "qa", "2" * 64]]},
        "stale": [],
        "servers": {role: {"role": role, "model": model, "served_name": Path(model).name, "url": f"http://127.0.0.1:{port}",
                           "gpus": gpus, "tp": len(gpus), "command": f"lmdeploy serve api_server {model} --api-keys '***'",
                           "external": False, "started": started, "job_id": "", "node": "", "ready_seconds": 41.0,
                           "waited_seconds": 40.0}
                    for role, model, port, gpus in (("target", f"/models/{MODEL}", 23333, [0, 1]),
                                                    ("judge", "/models/CompassVerifier-32B", 23334, [2, 3]))},
        "versions": {"lmeval": "0.1.0", "opencompass": "0.5.4", "lmdeploy": "0.18.0"},
        "stages": {"infer": {"status": "ok", "started": started, "ended": started + 2400, "seconds": 2400.0,
                             "opencompass_seconds": 2350.0, "message": ""},
                   "eval": {"status": "ok", "started": started + 2400, "ended": started + 3500, "seconds": 1100.0,
                            "opencompass_seconds": 1080.0, "message": ""}},
        "wall_seconds": 3540.0,
        "scores": [{"dataset": JUDGED, "metric": "accuracy", "value": judged_score,
                    "stderr": stderr([float(verdict == "A") for verdict in verdicts]), "judge_replies": samples,
                    "judge_invalid": samples - verdicts.count("A") - verdicts.count("B")},
                   {"dataset": RULED, "metric": "accuracy", "value": ruled_score, "stderr": stderr(right),
                    "judge_replies": None, "judge_invalid": None},
                   {"dataset": REPEATED, "metric": f"accuracy ({RUNS} runs average)", "value": repeated_score,
                    "stderr": stderr(repeated), "judge_replies": RUNS * REPEATED_QUESTIONS, "judge_invalid": 0}],
        "judge_rows": {JUDGED: [JUDGED], REPEATED: [REPEATED]},
    })
    return run_dir


def browser_times(page: Path, runs: int, user_data: Path) -> dict[str, list[float]]:
    """Seconds to the first rows rendered and to the first contentful paint, per navigation, and
    the time "wrong only" and a search take on the judged table."""
    from selenium.webdriver.support.ui import WebDriverWait

    times: dict[str, list[float]] = {"first rows rendered": [], "first contentful paint": [],
                                     '"wrong only" ticked': [], "a search": []}
    with headless_chromium(user_data) as driver:
        for run in range(runs + 1):  # the first warms the page cache and is not counted
            driver.get("about:blank")  # else chromedriver may return from a reload of the same page too early
            driver.get(page.as_uri())
            WebDriverWait(driver, 30).until(lambda d: d.execute_script(
                "return document.readyState === 'complete' && window.lmevalFirstRender"))
            rendered, painted = driver.execute_script(
                "return [window.lmevalFirstRender, "
                "(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null]")
            filtered, searched = driver.execute_script(f"""
                const section = document.querySelector('section[data-dataset="{JUDGED}"]');
                let started = performance.now();
                section.querySelector('.wrong-only').click();
                const filtered = performance.now() - started;
                section.querySelector('.wrong-only').click();
                const search = section.querySelector('.search');
                search.value = 'prime river';
                started = performance.now();
                search.dispatchEvent(new KeyboardEvent('keydown', {{key: 'Enter'}}));
                return [filtered, performance.now() - started];""")
            if run:
                times["first rows rendered"].append(rendered / 1000)
                if painted is not None:
                    times["first contentful paint"].append(painted / 1000)
                times['"wrong only" ticked'].append(filtered / 1000)
                times["a search"].append(searched / 1000)
    return {name: values for name, values in times.items() if values}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5, help="runs of each command and page loads (default 5)")
    parser.add_argument("--samples", type=int, default=10_000, help="prompts of the judged dataset (default 10000)")
    parser.add_argument("-w", "--work-dir", help=f"a work dir holding the bench's run {RUN_ID} (made if missing)")
    args = parser.parse_args()
    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="lmeval-report-bench-"))
    run_dir = work_dir / RUN_ID
    if not run_dir.exists():
        print(f"bench: writing a run of {args.samples} + {args.samples // 10} + {REPEATED_QUESTIONS} x {RUNS} samples "
              f"into {run_dir}", file=sys.stderr, flush=True)
        write_run(work_dir, args.samples)
    lmeval = str(VENV_BIN / "lmeval")
    anchor = "python -c pass (anchor)"
    commands = {
        anchor: [str(VENV_BIN / "python"), "-c", "pass"],
        "lmeval results": [lmeval, "results", RUN_ID, "-w", str(work_dir)],
        "lmeval report": [lmeval, "report", RUN_ID, "-w", str(work_dir)],
    }
    times = interleaved_times(commands, args.n)
    page = run_dir / "report.html"
    print(f"bench: the page is {page.stat().st_size / 1e6:.1f} MB; loading it {args.n} times in headless chromium",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="lmeval-report-bench-chromium-") as user_data:
        shown = browser_times(page, args.n, Path(user_data))
    goals = {"lmeval report": WRITE_GOAL, "first rows rendered": RENDER_GOAL}
    anchor_median = statistics.median(times[anchor])
    print("| measured | median | max | median / anchor | goal | met |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    missed = []
    for name, values in {**times, **shown}.items():
        median, worst = statistics.median(values), max(values)
        goal = goals.get(name)
        met = "-" if goal is None else "yes" if worst < goal else "NO"
        if met == "NO":
            missed.append(name)
        print(f"| {name} | {median:.3f} s | {worst:.3f} s | {median / anchor_median:.1f}x | "
              f"{'-' if goal is None else f'{goal:g} s'} | {met} |")
    print(f"\n{args.samples} + {args.samples // 10} + {REPEATED_QUESTIONS} x {RUNS} samples, "
          f"{page.stat().st_size / 1e6:.1f} MB page; {args.n} runs of "
          f"each. Repeat with: `.venvs/lmeval/bin/python bench/report_bench.py -n {args.n} -w {work_dir}`")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
