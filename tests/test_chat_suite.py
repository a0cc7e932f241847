"""`lmeval run MODEL --task chat`, the job lmeval exists for, as a user runs it: the six datasets
in miniature where OpenCompass 0.5.4 reads them (tests/chat_suite.py), the venv `lmeval setup`
made, the stand-in answering from a key, offline. Every row of the table is the score the key
implies, computed from the key alone."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from chat_suite import HLE, IFEVAL, INVALID_MARKER, LCB, OTHER_DATASETS, chat_args, fenced, write_suite
from scenarios import judge_agrees
from toolkit import VENVS, leftovers, only_run, read_json, score_rows

from lmeval import outputs

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

SUITE_ROWS = ["core_average", "aime2025_repeat_32", "GPQA_diamond_repeat_4", "IFEval", "lcb_code_generation_repeat_6",
              "mmlu_pro", "hle_llmjudge"]


def shown(stdout: str) -> dict[str, str]:
    """Each row of the score table as printed: dataset -> score (the first number of its cell)."""
    return {dataset: cells[1].split()[0] for dataset, cells in score_rows(stdout).items()}


def test_the_whole_suite_scores_exactly_what_the_key_implies(chat_runs):
    full = chat_runs.full
    assert full.poll() == 0, full.transcript()
    expected = chat_runs.suite.key.expected
    assert list(score_rows(full.stdout)) == SUITE_ROWS
    assert shown(full.stdout) == {row: f"{expected[row]:.2f}" for row in SUITE_ROWS}
    assert chat_runs.leftovers == {"full": [], "other": []}
    assert full.stderr_lines[-1] == (f"lmeval: every prompt, answer and judge reply: lmeval report "
                                     f"{chat_runs.full_dir.name} -w {chat_runs.work_dir}")
    manifest = read_json(chat_runs.full_dir / "lmeval.json")
    assert manifest["stages"]["infer"]["status"] == manifest["stages"]["eval"]["status"] == "ok"
    recorded = {entry["dataset"]: entry["value"] for entry in manifest["scores"]}
    assert recorded == pytest.approx({row: expected[row] for row in SUITE_ROWS}, abs=0.005)


def test_some_datasets_of_the_suite_score_alone_without_the_suites_average(chat_runs):
    other = chat_runs.other
    assert other.poll() == 0, other.transcript()
    expected = chat_runs.suite.other.expected
    rows = ["aime2025_repeat_32", "GPQA_diamond_repeat_4", "IFEval"]
    assert OTHER_DATASETS == "aime2025,gpqa,ifeval"
    assert shown(other.stdout) == {row: f"{expected[row]:.2f}" for row in rows}


def test_livecodebench_runs_each_program_through_its_own_evaluator(chat_runs):
    """The five problems' programs as OpenCompass's runner judged them, run by run: a right one,
    a wrong answer, a runtime error, a time-out, and a LeetCode-style function."""
    results = read_json(outputs.results_file(chat_runs.full_dir, "demo-chat", "lcb_code_generation_repeat_6"))
    details = results["details"]
    assert len(details) == len(LCB)
    seen = []
    for detail in details:
        messages = sorted(json.loads(meta).get("error_message", "passed") for meta in detail["final_metadata"])
        seen.append((sum(detail["correct"]), messages))
    assert seen == [
        (4, ["Wrong Answer"] * 2 + ["passed"] * 4),
        (0, ["Wrong Answer"] * 6),
        (0, ["Runtime Error"] * 6),
        (0, ["Time Limit Exceeded"] + ["Wrong Answer"] * 5),
        (6, ["passed"] * 6),
    ]
    designed = [round(6 * item.share) for item in chat_runs.suite.key.items["lcb_code_generation_repeat_6"]]
    assert [right for right, _ in seen] == designed


def test_ifevals_details_say_which_instruction_each_answer_followed(chat_runs):
    """lmeval's subclass of IFEval's evaluator keeps, per answer, the list OpenCompass's strict
    check computed (one instruction each here: followed as designed)."""
    results = read_json(outputs.results_file(chat_runs.full_dir, "demo-chat", "IFEval"))
    followed = [detail["follow_instruction_list"] for detail in results["details"]]
    assert followed == [[[follows]] for *_, follows in IFEVAL]
    assert [detail["refer"][0]["instruction_id_list"] for detail in results["details"]] == [ids for _, ids, *_ in IFEVAL]


def test_every_program_a_compilation_error_is_a_failure_not_a_score(chat_runs, tmp_path):
    """What OpenCompass's LiveCodeBench evaluator writes when its runner has no pyext (as on the
    Python 3.11 venv of a plain `pip install opencompass`): lmeval refuses it as a score."""
    script = tmp_path / "score_programs.py"  # not evaluate.py: OpenCompass imports a package of that name
    script.write_text(
        "import json, sys\n"
        "from opencompass.datasets.livecodebench import testing_util\n"
        "testing_util.RuntimeModule = None  # what OpenCompass has where pyext is not installed\n"
        "from opencompass.datasets.livecodebench.evaluator import LCBCodeGenerationEvaluator\n"
        "evaluator = LCBCodeGenerationEvaluator(num_process_evaluate=2, timeout=6, release_version='v6', "
        "extractor_version='v2')\n"
        "print(json.dumps(evaluator.score(json.loads(sys.argv[1]), json.loads(sys.argv[2]))))\n")
    programs = [fenced(replies[0]) for _, _, _, _, _, replies, _ in LCB]
    ids = [f"lcb{position + 1}" for position in range(len(LCB))]
    done = subprocess.run([str(VENVS / "opencompass" / "bin" / "python"), str(script), json.dumps(programs),
                           json.dumps(ids)], capture_output=True, text=True, timeout=300, check=False,
                          env={"COMPASS_DATA_CACHE": str(chat_runs.suite.compass), "PATH": "/usr/bin:/bin",
                               "HF_HOME": str(chat_runs.suite.hf_datasets.parent), "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["pass@1"] == 0.0  # the number OpenCompass reports
    assert outputs.implausible(result, None) == (
        "every one of its 5 programs is recorded as a compilation error (AttributeError(\"'NoneType' object has no "
        "attribute 'from_string'\")): OpenCompass's code runner is broken, not the model; run `lmeval setup` again "
        "(it installs the runner's pyext), then judge again")


def test_hle_missing_offline_is_refused_in_seconds_before_any_server_starts(tmp_path, lmeval_runner):
    suite = write_suite(tmp_path / "data", hle=False)
    work_dir = tmp_path / "out"
    started = time.monotonic()
    refused = lmeval_runner.run("run", *chat_args(work_dir), env=lmeval_runner.env(**suite.env()), work_dir=work_dir)
    took = time.monotonic() - started
    assert refused.poll() == 2, refused.transcript()
    assert took < 10, f"lmeval took {took:.1f} s to refuse"
    cache = suite.hf_datasets
    assert refused.stderr_lines[-1] == (
        f"lmeval: error: hle: its data is not in the Hugging Face datasets cache {cache} (as cais/hle), and "
        "huggingface.co cannot be reached from here: on a machine with network, `lmeval data pull --datasets hle "
        "--dest DIR` (a gated dataset: accept its terms on https://huggingface.co/datasets/cais/hle and set HF_TOKEN), "
        "then run with --data-dir DIR; or leave hle out with --datasets")
    assert "server" not in refused.stderr
    assert list(work_dir.iterdir()) == []  # no run folder claimed
    assert leftovers([work_dir]) == []


def test_a_failing_dataset_costs_only_itself_and_reuse_redoes_only_it(tmp_path, lmeval_runner):
    """GPQA's file is broken (its loader fails) and the judge gives HLE no verdict: IFEval is scored
    and shown, lmeval exits 1 naming both; then, the file mended and the judge sane, `--reuse`
    infers only GPQA and judges GPQA and HLE again."""
    suite = write_suite(tmp_path / "data")
    gpqa = suite.compass / "data" / "gpqa" / "gpqa_diamond.csv"
    kept = gpqa.read_text()
    gpqa.write_text(kept.splitlines()[0] + "\nonly,three,columns\n")
    key = json.loads(suite.key.path.read_text())
    for entry in key:
        if entry["match"].startswith("[hle-"):
            entry["replies"] = [f"{reply} {INVALID_MARKER}" for reply in entry["replies"]]
    unsure = tmp_path / "unsure-key.json"
    unsure.write_text(json.dumps(key))
    work_dir, requests = tmp_path / "out", tmp_path / "requests.jsonl"
    args = chat_args(work_dir, "demo-chat", "--datasets", "gpqa,ifeval,hle")
    env = lmeval_runner.env(**{**suite.env(), "STANDIN_ANSWER_KEY": str(unsure)}, STANDIN_REQUEST_LOG=str(requests))
    first = lmeval_runner.run("run", *args, env=env, work_dir=work_dir, timeout=600)
    assert first.poll() == 1, first.transcript()
    run_dir = only_run(work_dir)
    assert shown(first.stdout) == {"IFEval": f"{suite.key.expected['IFEval']:.2f}", "hle_llmjudge": "-"}
    error = first.stderr_lines[[line.startswith("lmeval: error: ") for line in first.stderr_lines].index(True)]
    assert error.startswith("lmeval: error: inference failed for GPQA_diamond_repeat_4: no predictions written (")
    assert "IndexError: list index out of range" in error
    assert (f"then rerun the same command with --reuse {run_dir.name}: only what is missing is inferred; and "
            "evaluation failed for hle_llmjudge (none of the judge's 3 replies holds a verdict (A for correct, B for "
            "incorrect): the judge model does not answer in CompassVerifier's format; check --judge-model, then "
            "judge again)") in error
    assert f"--- GPQA_diamond_repeat_4, in {run_dir}/logs/infer/demo-chat/" in first.stderr  # its own traceback
    assert not outputs.results_file(run_dir, "demo-chat", "hle_llmjudge").exists()  # moved aside
    assert leftovers([work_dir]) == []

    gpqa.write_text(kept)
    requests.unlink()
    sane = {name: value for name, value in env.items() if name != "STANDIN_JUDGE_INVALID"}
    second = lmeval_runner.run("run", *args, "--reuse", run_dir.name, env=sane, work_dir=work_dir, timeout=600)
    assert second.poll() == 0, second.transcript()
    asked = [json.loads(line)["messages"][-1]["content"] for line in requests.read_text().splitlines()
             if json.loads(line)["model"] == "demo-chat"]
    assert len(asked) == 16 and all("[gpqa-" in prompt for prompt in asked)  # 4 questions x 4 runs, nothing else
    # The sane judge sees each answer with a word its gold lacks: wrong, every one.
    assert not any(judge_agrees(f"{reply} {INVALID_MARKER}", gold) for _, gold, reply, image in HLE if not image)
    assert shown(second.stdout) == {"GPQA_diamond_repeat_4": f"{suite.key.expected['GPQA_diamond_repeat_4']:.2f}",
                                    "IFEval": f"{suite.key.expected['IFEval']:.2f}", "hle_llmjudge": "0.00"}
    assert leftovers([work_dir]) == []


def test_the_suites_data_paths_are_where_opencompass_reads_them():
    """lmeval's table of where each dataset's data lies, against OpenCompass's own DATASETS_MAPPING
    and the configs' paths, read in its venv."""
    from lmeval.suites import CHAT_SUITE

    script = (
        "import json, importlib\n"
        "from opencompass.utils.datasets_info import DATASETS_MAPPING\n"
        "found = {}\n"
        "for module, variable in json.loads(input()):\n"
        "    datasets = getattr(importlib.import_module(module), variable)\n"
        "    dataset = (datasets if isinstance(datasets, list) else [datasets])[0]\n"
        "    path = dataset['path']\n"
        "    local = DATASETS_MAPPING.get(path, {}).get('local', path)\n"
        "    found[module] = [local, dataset.get('name')]\n"
        "print(json.dumps(found))\n")
    done = subprocess.run([str(VENVS / "opencompass" / "bin" / "python"), "-c", script], capture_output=True,
                          text=True, timeout=300, check=True,
                          input=json.dumps([[item.module, item.variable] for item in CHAT_SUITE]))
    found = json.loads(done.stdout.splitlines()[-1])
    for item in CHAT_SUITE:
        local, name = found[item.module]
        if item.hf_dataset:
            assert local == item.hf_dataset
            continue
        where = os.path.normpath(local)  # './data/gpqa/' -> 'data/gpqa'
        assert item.data == ((f"{where}/{name}",) if name else (where,)), item.name
