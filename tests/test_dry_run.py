"""`lmeval run MODEL --task chat --dry-run`: configs OpenCompass 0.5.4 loads, with all six
dataset families and the judge's URL in every judged dataset; no server started."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from toolkit import MODELS, REPO, TOOLS, leftovers
from lmeval.ocenv import opencompass_env

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

FAMILIES = {"aime2025": True, "GPQA": True, "IFEval": False, "lcb_code_generation": False, "mmlu_pro": True,
            "hle": True}  # dataset name prefix -> scored by the judge


def test_chat_dry_run_writes_configs_opencompass_loads(tmp_path, venvs, lmeval_runner):
    work_dir = tmp_path / "out"
    result = lmeval_runner.run("run", str(MODELS / "demo-chat"), "--task", "chat", "--gpus", "0",
                               "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "1,2",
                               "-w", str(work_dir), "--dry-run", *TOOLS, work_dir=work_dir)
    assert result.poll() == 0, result.transcript()
    (run_dir,) = work_dir.iterdir()
    assert leftovers([work_dir]) == []
    assert not (run_dir / "servers").exists()  # nothing was started
    judge_line = next(line for line in result.stdout.splitlines() if line.startswith("judge server (GPUs 1,2): "))
    assert "CUDA_VISIBLE_DEVICES=1,2 " in judge_line and "--tp 2" in judge_line
    judge_port = re.search(r"--server-port (\d+)", judge_line).group(1)

    report = tmp_path / "report.json"
    configs = [run_dir / "lmeval" / "infer_config.py", run_dir / "lmeval" / "eval_config.py"]
    loader = [str(venvs / "opencompass" / "bin" / "python"), str(REPO / "tests" / "oc_load_config.py"),
              "--out", str(report), *map(str, configs)]
    done = subprocess.run(loader, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=opencompass_env(dict(os.environ)))
    assert done.returncode == 0, done.stderr[-3000:]
    infer, evaluation = json.loads(report.read_text())["configs"]
    for config in (infer, evaluation):
        assert "error" not in config, config.get("error")
        abbrs = [d["abbr"] for d in config["loaded"]["datasets"]]
        assert {family for family in FAMILIES if any(a.startswith(family) for a in abbrs)} == set(FAMILIES)
    for dataset in evaluation["loaded"]["datasets"]:
        family = next(f for f in FAMILIES if dataset["abbr"].startswith(f))
        wired = dataset["judge"] or dataset["llm_judge"]
        if FAMILIES[family]:
            assert wired["openai_api_base"] == f"http://127.0.0.1:{judge_port}/v1", dataset["abbr"]
            assert wired["path"] == "demo-judge"
        else:
            assert wired is None, dataset["abbr"]
