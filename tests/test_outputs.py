"""Reading what OpenCompass left, in the forms its 0.5.4 writes them: each dataset's traceback in
the inference log all datasets share, and the results a broken evaluator leaves, which hold a
number but no score."""

from __future__ import annotations

import json

from lmeval import outputs

TRACEBACK = """Traceback (most recent call last):
  File "/venv/opencompass/tasks/openicl_infer_concurrent.py", line 195, in _run_dataset_task
    dataset = build_dataset_from_cfg(dataset_cfg)
  File "/venv/opencompass/datasets/gpqa.py", line 26, in load
    if row[7] == 'Question':
IndexError: list index out of range
"""


def record(time: str, text: str) -> str:
    return f"12/07 18:{time} - OpenCompass - INFO - {text}\n"


def failed(time: str) -> str:
    return (f"12/07 18:{time} - OpenCompass - ERROR - /venv/opencompass/tasks/openicl_infer_concurrent.py - "
            f"_run_dataset_task - 234 - Infer failed with\n{TRACEBACK}")


def test_each_datasets_traceback_is_found_in_the_log_they_share(tmp_path):
    """Its failure comes before the record of its end; the traceback names no dataset; tqdm's bars
    may start a line before the record."""
    log = tmp_path / "IFEval.out"
    log.write_text(
        record("06:43", "Start dataset task [demo-chat/IFEval]")
        + "Map:   0%|          | 0/4 [00:00<?, ? examples/s]\x1b[A" + record("06:43", "Start dataset task [demo-chat/GPQA]")
        + failed("06:44")
        + record("06:44", "Finished dataset task [demo-chat/GPQA]")
        + record("06:44", "Finished dataset task [demo-chat/IFEval]")
        + record("06:45", "Start dataset task [demo-chat/hle_llmjudge]")
        + failed("07:08").replace("IndexError: list index out of range", "FileNotFoundError: no cais/hle here")
        + record("07:09", "Finished dataset task [demo-chat/hle_llmjudge]"))
    found = outputs.inference_errors(log)
    assert set(found) == {"GPQA", "hle_llmjudge"}
    assert found["GPQA"].splitlines()[-1] == "IndexError: list index out of range"
    assert found["GPQA"].splitlines()[0] == "Traceback (most recent call last):"
    assert found["hle_llmjudge"].splitlines()[-1] == "FileNotFoundError: no cais/hle here"
    assert outputs.inference_errors(tmp_path / "none.out") == {}


def lcb_result(errors: list[str]) -> dict:
    """LiveCodeBench's results as its evaluator writes them: per question, the metadata of each run."""
    return {"pass@1": 0.0, "details": [
        {"example_abbr": f"lcb_{index}", "final_metadata": [json.dumps({"error": error, "error_code": -1,
                                                                        "error_message": message})],
         "correct": [False]} for index, (error, message) in enumerate(errors)]}


def test_every_program_a_compilation_error_is_no_score_but_one_is_a_models_fault():
    broken = lcb_result([("AttributeError('x')", "Compilation Error"), ("AttributeError('x')", "Compilation Error")])
    assert outputs.implausible(broken, None).startswith(
        "every one of its 2 programs is recorded as a compilation error (AttributeError('x')): ")
    mixed = lcb_result([("AttributeError('x')", "Compilation Error"), ("", "Wrong Answer")])
    assert outputs.implausible(mixed, None) is None


def test_an_error_for_every_answer_is_no_score():
    result = {"accuracy": 0.0, "details": [{"example_abbr": "d_0", "error": ["timeout", "timeout"]},
                                           {"example_abbr": "d_1", "error": ["timeout", "timeout"]}]}
    assert outputs.implausible(result, None) == (
        "OpenCompass's evaluator recorded an error for every one of its 4 answers (timeout); see its eval log")
    result["details"][1]["error"] = ["timeout", ""]
    assert outputs.implausible(result, None) is None


def test_no_judge_reply_with_a_verdict_is_no_score(tmp_path):
    results = tmp_path / "run" / "results" / "m"
    results.mkdir(parents=True)
    (results / "hle.json").write_text(json.dumps({"accuracy": 0.0, "details": []}))
    replies = {"0": {"prediction": "I cannot judge this."}, "1": {"prediction": "?"}}
    (results / "hle_replica0.json").write_text(json.dumps(replies))
    assert outputs.result_error(tmp_path / "run", "m", "hle") == (
        "none of the judge's 2 replies holds a verdict (A for correct, B for incorrect): the judge model does not "
        "answer in CompassVerifier's format; check --judge-model, then judge again")
    replies["1"] = {"prediction": "B"}
    (results / "hle_replica0.json").write_text(json.dumps(replies))
    assert outputs.result_error(tmp_path / "run", "m", "hle") is None


def test_judge_reply_files_come_in_run_order(tmp_path):
    results = tmp_path / "results" / "m"
    results.mkdir(parents=True)
    for run in (10, 2, 0, 1):
        (results / f"aime_replica{run}.json").write_text("{}")
    (results / "tmp_aime_replica3.json").write_text("{}")
    assert [path.name for path in outputs.judge_reply_files(tmp_path, "m", "aime")] == [
        "aime_replica0.json", "aime_replica1.json", "aime_replica2.json", "aime_replica10.json"]
