"""Building blocks of the end-to-end tests: datasets with a known share answered right, and
the expected scores computed from the answer key alone (never from a run)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
from helpers_processes import REPO, RUN_ENV, STANDIN, processes_where

SAMPLE_MODELS = REPO / "examples" / "sample" / "models"


@dataclass
class Scenario:
    qa: Path
    mc: Path
    key: Path
    expected: dict[str, float]  # dataset name -> accuracy in percent


def judge_agrees(reply: str, gold: str) -> bool:
    """The stand-in judge's rule, written out again here so the expected scores do not come
    from the code that produces them: case, runs of spaces and a trailing stop are ignored."""
    def norm(text: str) -> str:
        return re.sub(r"\s+", " ", text).strip().casefold().rstrip(".,!?")
    return norm(reply) == norm(gold)


QaRow = tuple[str, str, str]  # question, gold answer, the stand-in's reply
McRow = tuple[str, list[str], str, str]  # question, options A.., gold letter, the letter replied


def write_scenario(folder: Path, qa_rows: list[QaRow], mc_rows: list[McRow]) -> tuple[Path, Path, Path, dict[str, float]]:
    """trivia.jsonl (QA, judged), choices.jsonl (multiple choice) and the stand-in's answer key
    in FOLDER, and the accuracy in percent each dataset must score, from the rows alone."""
    folder.mkdir(parents=True, exist_ok=True)
    qa, mc, key = folder / "trivia.jsonl", folder / "choices.jsonl", folder / "key.json"
    qa.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a, _ in qa_rows))
    mc.write_text("".join(json.dumps({"question": q, **dict(zip("ABC", opts)), "answer": a}) + "\n"
                          for q, opts, a, _ in mc_rows))
    entries = [{"match": q, "reply": reply} for q, _, reply in qa_rows]
    entries += [{"match": q, "reply": f"The answer is {reply}."} for q, _, _, reply in mc_rows]
    key.write_text(json.dumps(entries))
    expected = {
        "trivia": 100 * sum(judge_agrees(reply, gold) for _, gold, reply in qa_rows) / len(qa_rows),
        "choices": 100 * sum(reply == gold for _, _, gold, reply in mc_rows) / len(mc_rows),
    }
    return qa, mc, key, expected


def make_scenario(folder: Path) -> Scenario:
    """A QA file (3 of 5 answered right) and a multiple-choice file (4 of 5), with the key."""
    qa_rows = [("Which metal is liquid at room temperature?", "Mercury", "Mercury"),
               ("Which planet is the largest?", "Jupiter", "Saturn"),
               ("What gas do plants absorb?", "Carbon dioxide", "carbon dioxide."),
               ("Who wrote Hamlet?", "Shakespeare", "Marlowe"),
               ("What is frozen water called?", "Ice", "Ice")]
    mc_rows = [("Pick the prime: ", ["4", "6", "7"], "C", "C"),
               ("Pick the even: ", ["3", "8", "9"], "B", "B"),
               ("Pick the square: ", ["16", "15", "14"], "A", "A"),
               ("Pick the odd: ", ["2", "4", "5"], "C", "A"),
               ("Pick the cube: ", ["9", "27", "30"], "B", "B")]
    return Scenario(*write_scenario(folder, qa_rows, mc_rows))


def lmeval(args: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmeval", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def tools(venvs: Path) -> list[str]:
    return ["--lmdeploy", str(STANDIN), "--opencompass", str(venvs / "opencompass" / "bin" / "opencompass")]


def run_processes(work_dir: Path) -> list[psutil.Process]:
    """Every live process lmeval tagged for a run in WORK_DIR: servers, their workers,
    OpenCompass and its tasks."""
    runs = {folder.name for folder in work_dir.iterdir()} if work_dir.is_dir() else set()
    return processes_where(lambda env: env.get(RUN_ENV) in runs)


def score_table(stdout: str) -> dict[str, float]:
    """The scores as the results table shows them: `│ dataset │ metric │ score │` rows."""
    scores = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|]", line) if cell.strip()]
        if len(cells) == 3 and re.fullmatch(r"\d+\.\d\d", cells[2]):
            scores[cells[0]] = float(cells[2])
    return scores
