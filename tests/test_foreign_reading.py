"""What lmeval reads from an OpenCompass run folder it did not make (lmeval.foreign), on folders
laid out as OpenCompass writes them; the real OpenCompass run is in test_foreign_run.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmeval.exceptions import UsageError
from lmeval.foreign import read_run

DUMP = """\
datasets = [
    dict(abbr='trivia', path='{qa}', type='opencompass.datasets.CustomDataset', reader_cfg=dict(input_columns=['question'])),
    dict(abbr='IFEval', path='data/ifeval/input_data.jsonl', type='opencompass.datasets.IFEvalDataset'),
    dict(abbr='GPQA_diamond_repeat_4', path='./data/gpqa/', type='opencompass.datasets.GPQADataset'),
]
models = [
    dict(abbr='my-model', path='/models/mine', tokenizer_path='/models/mine-tok', temperature=0.2,
         max_out_len=2048, max_seq_len=4096, type='opencompass.models.OpenAISDK', key=object()),
]
work_dir = 'outputs/20250101_120000'
"""


def run_folder(tmp_path: Path, predicted: dict[str, list[str]], dump: str | None = DUMP) -> Path:
    run_dir = tmp_path / "20250101_120000"
    for model, names in predicted.items():
        (run_dir / "predictions" / model).mkdir(parents=True)
        for name in names:
            (run_dir / "predictions" / model / f"{name}.json").write_text("{}")
    if dump is not None:
        (run_dir / "configs").mkdir(parents=True)
        (run_dir / "configs" / "20250101_120000_4242.py").write_text(dump.format(qa=tmp_path / "trivia.jsonl"))
    return run_dir


def test_the_model_datasets_and_settings_come_from_the_dump_and_the_predictions(tmp_path):
    run_dir = run_folder(tmp_path, {"my-model": ["trivia", "IFEval"]})
    found = read_run(run_dir)
    assert (found.model_abbr, found.model, found.task, found.datasets, found.files) == (
        "my-model", "/models/mine-tok", "chat", "ifeval", [str(tmp_path / "trivia.jsonl")])
    assert (found.generation.temperature, found.generation.max_out_len, found.generation.max_seq_len) == (0.2, 2048, 4096)
    assert found.config == run_dir / "configs" / "20250101_120000_4242.py"


@pytest.mark.parametrize("predicted, dump, message", [
    ({}, DUMP, "{run} has no lmeval.json and no predictions: nothing to judge"),
    ({"a": ["trivia"], "b": ["trivia"]}, DUMP,
     "{run} holds predictions of 2 models (a, b); lmeval judges runs of one model"),
    ({"my-model": ["trivia"]}, None, "{run}/configs holds no OpenCompass config of model my-model: cannot tell what was "
                                     "inferred"),
    ({"my-model": ["trivia", "cmmlu"]}, DUMP, "{run} has predictions of cmmlu, which lmeval knows neither as a suite "
                                              "dataset (lmeval tasks) nor as a .jsonl file of CustomDataset (read from "
                                              "{run}/configs/20250101_120000_4242.py)"),
])
def test_what_lmeval_cannot_judge_is_one_line_saying_why(tmp_path, predicted, dump, message):
    run_dir = run_folder(tmp_path, predicted, dump)
    with pytest.raises(UsageError) as error:
        read_run(run_dir)
    assert error.value.message == message.format(run=run_dir)
