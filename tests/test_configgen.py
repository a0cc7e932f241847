"""OpenCompass configs from lmeval: the suite registry, the user's dataset files, and the configs
themselves, checked by loading them with the real OpenCompass 0.5.4 (its own venv, a subprocess:
lmeval never imports it)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from conftest import venv_python
from toolkit import REPO
from lmeval import configgen, configplan, prompts, pyliteral, suites
from lmeval.ocenv import opencompass_env
from lmeval.datasets import UserDataset, load_user_dataset
from lmeval.exceptions import UsageError

LOADER = REPO / "tests" / "oc_load_config.py"
CHAT_NAMES = ("aime2025", "gpqa", "ifeval", "code", "mmlu_pro", "hle")
CHAT_JUDGED = {"aime2025", "gpqa", "mmlu_pro", "hle"}


# ------------------------------------------------------------------------------------------------
# Helpers


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def rows(*items: dict) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


QA_ROWS = rows({"question": "What is 2+2?", "answer": "4", "id": 1},
               {"question": "Capital of France?", "answer": "Paris", "id": 2})
MC_ROWS = rows({"question": "Pick the second", "A": "one", "B": "two", "C": "three", "answer": "B"},
               {"question": "Pick the first", "A": "x", "B": "y", "C": "z", "answer": "A"})


def served(role: str, port: int, in_flight: int, tokenizer: str = "/models/tok") -> configplan.ServedModel:
    return configplan.ServedModel(base_url=f"http://127.0.0.1:{port}", api_key=SecretStr(f"sk-{role}-key"),
                                  served_name=f"{role}-served", tokenizer_path=tokenizer, in_flight=in_flight)


def plan(datasets, judge: bool = True, tokenizer: str = "/models/tok", **overrides) -> configplan.ConfigPlan:
    values = dict(
        datasets=tuple(datasets), model_abbr="my-model", target=served("target", 23333, 64, tokenizer),
        judge=served("judge", 23334, 32, tokenizer) if judge else None,
    )
    values.update(overrides)
    return configplan.ConfigPlan(**values)


def usage_error(call, *args, **kwargs) -> str:
    with pytest.raises(UsageError) as caught:
        call(*args, **kwargs)
    return caught.value.message


# ------------------------------------------------------------------------------------------------
# Suite registry


def test_chat_suite_lists_its_six_datasets_and_which_need_the_judge():
    table = suites.task_rows()
    assert [row.dataset for row in table if row.suite == "chat"] == list(CHAT_NAMES)
    assert {row.dataset for row in table if row.needs_judge} == CHAT_JUDGED
    by_name = {row.dataset: row for row in table}
    assert by_name["mmlu_pro"].results == tuple("mmlu_pro_" + c.replace(" ", "_") for c in suites.MMLU_PRO_CATEGORIES)
    assert by_name["code"].results == ("lcb_code_generation_repeat_6",)


def test_select_suite_keeps_suite_order_and_refuses_unknown_names():
    assert [d.name for d in suites.select_suite("chat", "ifeval, gpqa")] == ["gpqa", "ifeval"]
    assert [d.name for d in suites.select_suite("chat", ["hle", "code", "hle"])] == ["code", "hle"]
    assert [d.name for d in suites.select_suite("chat")] == list(CHAT_NAMES)
    assert usage_error(suites.select_suite, "chat", "gpqa,mmlu") == (
        "unknown dataset 'mmlu' in --datasets; the chat suite has: aime2025, gpqa, ifeval, code, mmlu_pro, hle")
    assert usage_error(suites.select_suite, "chat", "gpqa,,ifeval").startswith("--datasets needs comma-separated names")
    assert usage_error(suites.select_suite, "base") == "unknown task 'base'; --task takes one of: chat (see lmeval tasks)"


def test_needs_judge_only_for_judged_datasets(tmp_path):
    qa = load_user_dataset(write(tmp_path / "qa.jsonl", QA_ROWS))
    mc = load_user_dataset(write(tmp_path / "mc.jsonl", MC_ROWS))
    assert not suites.needs_judge(suites.select_suite("chat", "ifeval,code"))
    assert not suites.needs_judge([mc, *suites.select_suite("chat", "ifeval")])
    assert suites.needs_judge(suites.select_suite("chat", "gpqa"))  # cascade: rule first, then the judge
    assert suites.needs_judge([mc, qa])
    assert qa.needs_judge and not mc.needs_judge


# ------------------------------------------------------------------------------------------------
# User dataset files


def test_qa_and_mc_files_are_told_apart(tmp_path):
    qa = load_user_dataset(write(tmp_path / "my qa.jsonl", QA_ROWS))
    assert (qa.kind, qa.options, qa.rows, qa.name, qa.path) == ("qa", (), 2, "my qa", str(tmp_path / "my qa.jsonl"))
    mc = load_user_dataset(write(tmp_path / "mc.jsonl", MC_ROWS))
    assert (mc.kind, mc.options, mc.rows, mc.name) == ("mc", ("A", "B", "C"), 2, "mc")


def test_relative_path_becomes_absolute_and_bom_and_crlf_are_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "bom.jsonl", "\ufeff" + QA_ROWS.replace("\n", "\r\n"))
    item = load_user_dataset("bom.jsonl")
    assert item.path == str(tmp_path / "bom.jsonl") and item.rows == 2


LINE1 = '{"question": "q", "answer": "a"}\n'
MC1 = '{"question": "q", "A": "a", "B": "b", "answer": "A"}\n'

BAD_FILES = [
    ("blank line", LINE1 + "\n" + LINE1, "F:2: blank line; every line must hold one JSON object"),
    ("trailing blank line", LINE1 + "  \n", "F:2: blank line; every line must hold one JSON object"),
    ("not json", LINE1 + "{question: 1}\n", "F:2: not valid JSON (Expecting property name enclosed in double quotes)"),
    ("array", "[1, 2]\n", "F:1: expected a JSON object, got an array"),
    ("string", '"q"\n', "F:1: expected a JSON object, got a string"),
    ("no question", '{"answer": "a"}\n', "F:1: missing column 'question'"),
    ("no answer", LINE1 + '{"question": "q"}\n', "F:2: missing column 'answer'"),
    ("number answer", '{"question": "q", "answer": 42}\n', "F:1: column 'answer' must be a string, got a number"),
    ("empty question", '{"question": "  ", "answer": "a"}\n', "F:1: column 'question' is empty"),
    ("null answer", '{"question": "q", "answer": null}\n', "F:1: column 'answer' must be a string, got null"),
    ("reserved", '{"question": "q", "answer": "a", "prediction": "p"}\n',
     "F:1: column 'prediction' is reserved by OpenCompass; rename it"),
    ("options gap", '{"question": "q", "A": "a", "C": "c", "answer": "A"}\n',
     "F:1: option columns must run from A without a gap; found A, C (no B)"),
    ("options not from A", '{"question": "q", "B": "b", "C": "c", "answer": "B"}\n',
     "F:1: option columns must run from A without a gap; found B, C (no A)"),
    ("one option", '{"question": "q", "A": "a", "answer": "A"}\n',
     "F:1: a multiple-choice row needs at least options A and B; found only A"),
    ("answer not an option", MC1 + '{"question": "q", "A": "a", "B": "b", "answer": "C"}\n',
     "F:2: answer 'C' is not one of the options A, B"),
    ("lowercase answer", '{"question": "q", "A": "a", "B": "b", "answer": "a"}\n',
     "F:1: answer 'a' is not one of the options A, B"),
    ("option missing later", MC1 + '{"question": "q", "A": "a", "answer": "A"}\n',
     "F:2: missing column 'B' (line 1 has options A-B)"),
    ("extra option later", MC1 + '{"question": "q", "A": "a", "B": "b", "C": "c", "answer": "A"}\n',
     "F:2: column 'C' is not an option of line 1 (A-B); every row must have the same options"),
    ("option not a string", '{"question": "q", "A": 1, "B": "b", "answer": "A"}\n',
     "F:1: column 'A' must be a string, got a number"),
    ("qa then mc", LINE1 + MC1,
     "F:2: has option column(s) A, B, but line 1 is a question/answer row; a file holds one kind of row"),
    ("mixed extra column", '{"question": "q", "answer": "a", "id": 1}\n{"question": "q", "answer": "a", "id": "x"}\n',
     "F:2: column 'id': holds a string where a number was seen before (first seen on line 1); "
     "OpenCompass (Arrow) needs one type per column"),
    ("bool then number", '{"question": "q", "answer": "a", "ok": true}\n{"question": "q", "answer": "a", "ok": 1}\n',
     "F:2: column 'ok': holds a number where a boolean was seen before (first seen on line 1); "
     "OpenCompass (Arrow) needs one type per column"),
    ("mixed list", '{"question": "q", "answer": "a", "tags": [1, "x"]}\n',
     "F:1: column 'tags': holds a string where a number was seen before; OpenCompass (Arrow) needs one type per column"),
    ("huge int", '{"question": "q", "answer": "a", "n": 99999999999999999999}\n',
     "F:1: column 'n': integer 99999999999999999999 does not fit in 64 bits; OpenCompass (Arrow) needs one type per column"),
    ("bare carriage return", '{"question": "q",\r"answer": "a"}\n',
     "F:1: not valid JSON (Expecting property name enclosed in double quotes)"),
]


@pytest.mark.parametrize("content,message", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_bad_rows_are_refused_naming_file_and_line(tmp_path, content, message):
    path = write(tmp_path / "data.jsonl", content)
    assert usage_error(load_user_dataset, path) == message.replace("F:", f"{path}:")


def test_rows_arrow_accepts_pass(tmp_path):
    content = rows(
        {"question": "q", "answer": "a", "score": 1, "meta": {"k": 1}, "tags": [], "note": None},
        {"question": "q", "answer": "a", "score": 2.5, "meta": {"j": "x"}, "tags": ["t"], "note": "n", "later": 1},
        {"question": "q", "answer": "a", "later": "ignored: not a column of the first row"},
    )
    assert load_user_dataset(write(tmp_path / "ok.jsonl", content)).rows == 3


def test_file_level_errors(tmp_path):
    missing = tmp_path / "missing.jsonl"
    assert usage_error(load_user_dataset, missing) == f"dataset file not found: {missing}"
    empty = write(tmp_path / "empty.jsonl", "")
    assert usage_error(load_user_dataset, empty) == f"dataset file is empty: {empty}"
    bom_only = write(tmp_path / "bom.jsonl", "\ufeff")
    assert usage_error(load_user_dataset, bom_only) == f"dataset file is empty: {bom_only}"
    wrong = write(tmp_path / "data.json", LINE1)
    assert usage_error(load_user_dataset, wrong) == f"dataset file must end in .jsonl: {wrong}"
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    assert usage_error(load_user_dataset, folder) == f"dataset file is not a regular file: {folder}"
    nameless = write(tmp_path / ".jsonl", LINE1)
    assert usage_error(load_user_dataset, nameless) == f"dataset file needs a name before .jsonl: {nameless}"
    latin1 = write(tmp_path / "latin1.jsonl", LINE1.encode() + '{"question": "caf\xe9", "answer": "a"}\n'.encode("latin-1"))
    assert usage_error(load_user_dataset, latin1) == f"{latin1}:2: not valid UTF-8 (invalid continuation byte)"


def test_resolve_datasets_refuses_clashing_names(tmp_path):
    a = write(tmp_path / "x.jsonl", QA_ROWS)
    (tmp_path / "other").mkdir()
    b = write(tmp_path / "other" / "x.jsonl", MC_ROWS)
    assert usage_error(suites.resolve_datasets, None, None, [a, b]) == (
        f"dataset name 'x' of {b} is already used by {a}; rename the file")
    ifeval = write(tmp_path / "IFEval.jsonl", QA_ROWS)
    assert usage_error(suites.resolve_datasets, "chat", "ifeval", [ifeval]) == (
        f"dataset name 'IFEval' of {ifeval} is already used by the ifeval dataset of the chat suite; rename the file")
    assert suites.resolve_datasets("chat", "gpqa", [ifeval])[-1].name == "IFEval"  # ifeval not picked: no clash
    group = write(tmp_path / "mmlu_pro.jsonl", QA_ROWS)
    assert "already used by the mmlu_pro summary of the chat suite" in usage_error(suites.resolve_datasets, "chat", None,
                                                                                   [group])
    core = write(tmp_path / "core_average.jsonl", QA_ROWS)
    assert "already used by the chat suite's average" in usage_error(suites.resolve_datasets, "chat", None, [core])
    shard = write(tmp_path / "x_0.jsonl", QA_ROWS)
    assert usage_error(suites.resolve_datasets, None, None, [a, shard]) == (
        "dataset name 'x_0' would be mistaken for shards or judge files of dataset 'x' in OpenCompass's outputs; "
        "rename the file")
    replica = write(tmp_path / "IFEval_replica0.jsonl", QA_ROWS)
    assert "of dataset 'IFEval'" in usage_error(suites.resolve_datasets, "chat", "ifeval", [replica])
    assert usage_error(suites.resolve_datasets, None, None, []) == (
        "no datasets to evaluate: pick a suite or pass --dataset FILE.jsonl")
    assert usage_error(suites.resolve_datasets, None, "gpqa", []) == "--datasets picks from a suite; name the suite too"


def test_resolve_datasets_keeps_suite_then_files(tmp_path):
    qa = write(tmp_path / "qa.jsonl", QA_ROWS)
    mc = write(tmp_path / "mc.jsonl", MC_ROWS)
    chosen = suites.resolve_datasets("chat", "ifeval,gpqa", [mc, qa])
    assert [getattr(item, "name") for item in chosen] == ["gpqa", "ifeval", "mc", "qa"]
    assert suites.dataset_abbrs(chosen) == ["GPQA_diamond_repeat_4", "IFEval", "mc", "qa"]


# ------------------------------------------------------------------------------------------------
# Writing Python


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_py_str_is_exact_and_harmless(value):
    literal = pyliteral.py_str(value)
    assert ast.literal_eval(literal) == value
    assert literal.isascii() and literal.isprintable()
    assert not set("{}\n\r") & set(literal)
    assert "'" not in literal[1:-1] and "\\'" not in literal


def test_py_str_examples():
    assert pyliteral.py_str("plain name-1.0/x:y z") == "'plain name-1.0/x:y z'"
    assert pyliteral.py_str("{{ fileDirname }}") == "'\\x7b\\x7b fileDirname \\x7d\\x7d'"
    assert pyliteral.py_str("a'b\\c\n") == "'a\\x27b\\x5cc\\x0a'"
    assert pyliteral.py_str("é漢🙂\ud800") == "'\\xe9\\u6f22\\U0001f642\\ud800'"


def test_render_is_deterministic_and_brace_free(tmp_path):
    qa = load_user_dataset(write(tmp_path / "qa.jsonl", QA_ROWS))
    mc = load_user_dataset(write(tmp_path / "mc.jsonl", MC_ROWS))
    the_plan = plan([*suites.select_suite("chat"), qa, mc])
    for stage in ("infer", "eval"):
        text = configgen.render_config(stage, the_plan)
        assert text == configgen.render_config(stage, plan([*suites.select_suite("chat"), qa, mc]))
        assert "{" not in text and "}" not in text
        compile(text, f"{stage}.py", "exec")
    infer, evaluation = configgen.render_config("infer", the_plan), configgen.render_config("eval", the_plan)
    assert "OpenICLInferConcurrentTask" in infer and "sk-judge-key" not in infer and "summarizer" not in infer
    assert "OpenICLEvalTask" in evaluation and "sk-judge-key" in evaluation and "summarizer = " in evaluation


def test_render_refuses_what_opencompass_would_mangle(tmp_path):
    qa = load_user_dataset(write(tmp_path / "qa.jsonl", QA_ROWS))
    assert usage_error(configgen.render_config, "infer", plan([qa], model_abbr="a/b")) == (
        "model name 'a/b' must be usable as a folder name (OpenCompass writes predictions/NAME/): "
        "no '/', not empty, '.' or '..'")
    assert usage_error(configgen.render_config, "infer", plan([qa], model_abbr="..")).startswith("model name '..' must be")
    assert usage_error(configgen.render_config, "eval", plan([qa], model_abbr="x{{ fileDirname }}")) == (
        "model name 'x{{ fileDirname }}' contains '{{': OpenCompass re-reads its config through mmengine, "
        "which rewrites '{{ ... }}' in it; rename it")
    secret = served("judge", 1, 1).model_copy(update={"api_key": SecretStr("k{{$HOME:x}}")})
    assert usage_error(configgen.render_config, "eval", plan([qa], judge=False).model_copy(update={"judge": secret})) == (
        "judge API key (hidden) contains '{{': OpenCompass re-reads its config through mmengine, "
        "which rewrites '{{ ... }}' in it; rename it")
    braced = qa.model_copy(update={"path": "/data/{{x}}/qa.jsonl"})
    assert "dataset file '/data/{{x}}/qa.jsonl' contains '{{'" in usage_error(configgen.render_config, "infer",
                                                                               plan([braced]))
    reasoning = served("target", 1, 1).model_copy(update={"served_name": "Marco-o1"})
    assert usage_error(configgen.render_config, "infer", plan([qa], target=reasoning)) == (
        "model served name 'Marco-o1' contains 'o1': OpenCompass 0.5.4 then treats it as an OpenAI reasoning "
        "model (drops the temperature, sends max_completion_tokens); serve it under another name")


def test_eval_needs_a_judge_only_for_judged_datasets(tmp_path):
    qa = load_user_dataset(write(tmp_path / "qa.jsonl", QA_ROWS))
    mc = load_user_dataset(write(tmp_path / "mc.jsonl", MC_ROWS))
    configgen.render_config("infer", plan([qa], judge=False))  # inference never needs it
    with pytest.raises(ValueError, match="the eval stage needs a judge for qa"):
        configgen.render_config("eval", plan([qa, mc], judge=False))
    text = configgen.render_config("eval", plan([mc, *suites.select_suite("chat", "ifeval,code")], judge=True))
    assert "judge" not in text.replace(str(tmp_path), "")  # rule-scored only: no judge wired in


def test_plan_validation():
    with pytest.raises(ValidationError, match="must start with http"):
        configplan.ServedModel(base_url="127.0.0.1:1", api_key=SecretStr("k"), served_name="m", tokenizer_path="/t",
                               in_flight=1)
    with pytest.raises(ValidationError, match="must not end in /v1"):
        configplan.ServedModel(base_url="http://h:1/v1/", api_key=SecretStr("k"), served_name="m", tokenizer_path="/t",
                               in_flight=1)
    with pytest.raises(ValidationError):
        configplan.ServedModel(base_url="http://h:1", api_key=SecretStr("k"), served_name="m", tokenizer_path="/t",
                               in_flight=0)
    with pytest.raises(ValidationError):
        configplan.Generation(temperature=float("nan"), max_out_len=1, max_seq_len=1, mode="none")
    assert served("x", 1, 1).api_base == "http://127.0.0.1:1/v1"


def test_judge_threads_share_in_flight(tmp_path):
    qa = load_user_dataset(write(tmp_path / "qa.jsonl", QA_ROWS))
    chat = suites.select_suite("chat")
    assert configgen.judge_threads(plan([qa])) == 32  # one judged dataset: all of in_flight
    assert configgen.judge_threads(plan([*chat, qa])) == 8  # 4 eval tasks at once share 32
    assert configgen.judge_threads(plan([*chat], eval_workers=64)) == 1  # never below one


# ------------------------------------------------------------------------------------------------
# The real OpenCompass: one loader run for the scenarios, one for the round trips, in parallel


ADVERSARIAL = [
    "{{ fileDirname }}", "{{$HOME:x}}", "{{_base_.models}}", "'''", '"""', "\\", "\\x41", "\n", "\r\n",
    "__import__('os').system('echo pwned')", "'); import os; ('", "${HOME}", "%(x)s", "é漢字🙂", "\x00", "\ud800",
    "\u2028", "#", "{", "}", "}}{{",
]


def _text():
    return st.one_of(st.text(max_size=20), st.sampled_from(ADVERSARIAL),
                     st.lists(st.sampled_from(ADVERSARIAL) | st.text(max_size=5), max_size=4).map("".join))


def _renderable(value: str) -> bool:
    return "{{" not in value


def _abbr_ok(value: str) -> bool:
    return _renderable(value) and value not in ("", ".", "..") and "/" not in value and "\0" not in value


def _served_ok(value: str) -> bool:
    return bool(value) and _renderable(value) and not any(m in value for m in configplan.OPENAI_REASONING_MARKERS)


ROUND_TRIP_EXAMPLES = 60


def draw_round_trip_cases() -> list[dict]:
    cases: list[dict] = []

    @given(abbr=_text().filter(_abbr_ok), served_name=_text().filter(_served_ok), key=_text().filter(_renderable),
           tokenizer=_text().filter(lambda v: bool(v) and _renderable(v)),
           url=_text().filter(lambda v: _renderable(v) and not v.rstrip("/").endswith("/v1")),
           judge_name=_text().filter(_served_ok), judge_key=_text().filter(_renderable),
           path=_text().filter(_renderable), name=_text().filter(_abbr_ok))
    @settings(max_examples=ROUND_TRIP_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def collect(**case):
        cases.append(case)

    # The adversarial strings themselves first (all in one, then each), where they are allowed;
    # the first ones are also formatted with yapf as LocalRunner does.
    allowed = [value for value in ADVERSARIAL if _abbr_ok(value) and _served_ok(value)]
    for value in ["".join(allowed), *allowed]:
        cases.append(dict(abbr=value, served_name=value, key=value, tokenizer=value, url=value,
                          judge_name=value, judge_key=value, path=value, name=value))
    collect()
    return cases


def round_trip_plan(case: dict) -> configplan.ConfigPlan:
    dataset = UserDataset(path="/data/" + case["path"] + ".jsonl", name=case["name"], kind="qa", rows=1)
    target = configplan.ServedModel(base_url="http://h/" + case["url"], api_key=SecretStr(case["key"]),
                                    served_name=case["served_name"], tokenizer_path=case["tokenizer"], in_flight=7)
    judge = configplan.ServedModel(base_url="https://j/" + case["url"], api_key=SecretStr(case["judge_key"]),
                                   served_name=case["judge_name"], tokenizer_path=case["tokenizer"], in_flight=5)
    return configplan.ConfigPlan(datasets=(dataset,), model_abbr=case["abbr"], target=target, judge=judge)


def run_loader(out: Path, configs: list[Path], *options: str) -> dict:
    python = venv_python("opencompass")
    command = [str(python), str(LOADER), "--out", str(out), *options, *map(str, configs)]
    # As lmeval runs OpenCompass: with its plugin folder on PYTHONPATH.
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=out.parent,
                          env=opencompass_env(dict(os.environ)))
    if done.returncode != 0 or not out.exists():
        raise AssertionError(f"loader failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    report = json.loads(out.read_text())
    for config in report["configs"]:
        if "error" in config:
            raise AssertionError(f"OpenCompass could not load {config['path']}:\n{config['error']}")
    return report


class Loaded:
    """The loader's reports, started once for the whole module, both runs at the same time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir()
        self.tokenizer = root / "tokenizer"
        qa = load_user_dataset(write(self.data / "my_qa.jsonl", QA_ROWS))
        mc = load_user_dataset(write(self.data / "my_mc.jsonl", MC_ROWS))
        chat = suites.select_suite("chat")
        tok = str(self.tokenizer)
        self.plans = {  # files_eval first: its first task dump is the one formatted with yapf
            "files_eval": ("eval", plan([qa, mc], tokenizer=tok, eval_workers=2)),
            "chat_infer": ("infer", plan([*chat, qa, mc], tokenizer=tok)),
            "chat_eval": ("eval", plan([*chat, qa, mc], tokenizer=tok)),
            "subset_eval": ("eval", plan([*suites.select_suite("chat", "gpqa,ifeval")], tokenizer=tok)),
            "rule_only_eval": ("eval", plan([*suites.select_suite("chat", "ifeval,code"), mc], judge=False, tokenizer=tok,
                                            forked_tasks=True)),  # as with --fork-server
            # a streamed evaluation's, or one after other datasets' inference failed: some members of a group
            "some_eval": ("eval", plan([*chat], tokenizer=tok, only=("IFEval", "mmlu_pro_math", "mmlu_pro_law"))),
        }
        configs = []
        for name, (stage, the_plan) in self.plans.items():
            configs.append(write(root / f"{name}.py", configgen.render_config(stage, the_plan)))
        self.cases = draw_round_trip_cases()
        trips = [write(root / f"trip_{i}.py", configgen.render_config("eval", round_trip_plan(case)))
                 for i, case in enumerate(self.cases)]
        self.braces = ["{{ fileDirname }}", "{{$HOME:/x}}", "a{{ fileBasename }}b", "{{_base_.x}}"]
        literal = "".join(f"value_{i} = {pyliteral.py_str(v)}\n" for i, v in enumerate(self.braces))
        values = [write(root / "values_plain.py", literal),
                  write(root / "values_lazy.py", "from opencompass.models import OpenAISDK\n" + literal)]
        pool = ThreadPoolExecutor(3)
        self.scenarios: Future = pool.submit(run_loader, root / "scenarios.json", configs, "--build",
                                             "--tokenizer", tok, "--yapf", "1")
        self.trips: Future = pool.submit(run_loader, root / "trips.json", trips, "--yapf", "2")
        self.values: Future = pool.submit(run_loader, root / "values.json", values, "--values")
        pool.shutdown(wait=False)

    def scenario(self, name: str) -> dict:
        report = self.scenarios.result()
        return report["configs"][list(self.plans).index(name)]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Loaded:
    venv_python("opencompass")
    return Loaded(tmp_path_factory.mktemp("configgen"))


def model_expectations(the_plan: configplan.ConfigPlan) -> dict:
    target = the_plan.target
    return dict(abbr=the_plan.model_abbr, path=target.served_name, key=target.api_key.get_secret_value(),
                openai_api_base=target.api_base, tokenizer_path=target.tokenizer_path, temperature=0.6,
                max_out_len=64000, max_seq_len=65536, mode="none", retry=10, max_workers=target.in_flight,
                run_cfg={"num_gpus": 0})


def judge_expectations(the_plan: configplan.ConfigPlan) -> dict:
    judge = the_plan.judge
    return dict(path=judge.served_name, key=judge.api_key.get_secret_value(), openai_api_base=judge.api_base,
                tokenizer_path=judge.tokenizer_path, temperature=0.001, max_out_len=8192, max_seq_len=65536,
                mode="mid", max_workers=configgen.judge_threads(the_plan), run_cfg={"num_gpus": 0})


def subset(actual: dict, expected: dict) -> dict:
    return {key: actual.get(key) for key in expected}


@pytest.mark.opencompass
def test_chat_infer_config(loaded):
    report = loaded.scenario("chat_infer")
    the_plan = loaded.plans["chat_infer"][1]
    abbrs = suites.dataset_abbrs(the_plan.datasets)
    for stage in ("loaded", "dumped", "task"):
        seen = report[stage]
        assert [d["abbr"] for d in seen["datasets"]] == abbrs, stage
        assert subset(seen["models"][0], model_expectations(the_plan)) == model_expectations(the_plan), stage
        assert seen["models"][0]["type"] == "lmeval_opencompass.LmevalOpenAISDK"
        assert seen["models"][0]["pred_postprocessor"]["type"].endswith("extract_non_reasoning_content")
        assert not any(d["judge"] or d["llm_judge"] for d in seen["datasets"]), "no judge at inference"
    assert report["task_class"].endswith(".OpenICLInferConcurrentTask")
    assert report["tasks"] == [abbrs]  # one task: every dataset under one in_flight semaphore
    assert report["task_num_gpus"] == [0]
    assert report["dumped"]["infer"]["runner"]["max_num_workers"] == 1
    # OpenCompass's own runner: each task a new Python, never forked from the threaded runner.
    assert report["dumped"]["infer"]["runner"]["type"] == "opencompass.runners.LocalRunner"
    assert report["dumped"]["keys"] == ["datasets", "infer", "models", "work_dir"]
    built = report["built"]["models"][0]
    assert built["tokenizer_type"] == "hf" and built["tokenizer_path"] == str(loaded.tokenizer)
    assert (built["path"], built["keys"], built["url"], built["max_workers"]) == (
        "target-served", ["sk-target-key"], "http://127.0.0.1:23333/v1", 64)


@pytest.mark.opencompass
def test_chat_eval_config_wires_the_judge_into_judged_datasets_only(loaded):
    report = loaded.scenario("chat_eval")
    the_plan = loaded.plans["chat_eval"][1]
    judge = judge_expectations(the_plan)
    families = {"aime2025": "GenericLLMEvaluator", "GPQA": "CascadeEvaluator", "IFEval": "LmevalIFEvaluator",
                "lcb_code_generation": "LCBCodeGenerationEvaluator", "mmlu_pro": "GenericLLMEvaluator",
                "hle": "GenericLLMEvaluator", "my_qa": "GenericLLMEvaluator", "my_mc": "AccEvaluator"}
    for stage in ("loaded", "dumped", "task"):
        datasets = report[stage]["datasets"]
        if stage != "task":
            assert [d["abbr"] for d in datasets] == suites.dataset_abbrs(the_plan.datasets)
            found = {family for family in families for d in datasets if d["abbr"].startswith(family)}
            assert found == set(families), stage
        for d in datasets:
            family = next(f for f in families if d["abbr"].startswith(f))
            assert d["evaluator"].endswith(families[family]), (stage, d["abbr"])
            wired = d["judge"] or d["llm_judge"]
            if family in ("IFEval", "lcb_code_generation", "my_mc"):
                assert wired is None, (stage, d["abbr"])
                continue
            assert subset(wired, judge) == judge, (stage, d["abbr"])
            assert wired["type"] == "lmeval_opencompass.LmevalOpenAISDK"
            if family == "GPQA":
                assert d["judge"] is None and d["rule_evaluator"].endswith("AccEvaluator")
        assert subset(report[stage]["models"][0], model_expectations(the_plan)) == model_expectations(the_plan)
    assert report["task_class"].endswith(".OpenICLEvalTask")
    assert report["tasks"] == [[abbr] for abbr in suites.dataset_abbrs(the_plan.datasets)]  # one task per dataset
    assert set(report["task_num_gpus"]) == {0}
    summarizer = report["dumped"]["summarizer"]
    assert summarizer["dataset_abbrs"][0] == ["core_average", "naive_average"]
    assert ["my_qa", "accuracy"] in summarizer["dataset_abbrs"]
    assert {group["name"] for group in summarizer["summary_groups"]} == {"mmlu_pro", "core_average"}
    mmlu = next(group for group in summarizer["summary_groups"] if group["name"] == "mmlu_pro")
    assert mmlu["subsets"] == list(suites.SUITES["chat"][4].abbrs)
    assert report["dumped"]["eval"]["runner"]["max_num_workers"] == 4
    assert report["dumped"]["eval"]["runner"]["type"] == "opencompass.runners.LocalRunner"


@pytest.mark.opencompass
def test_subset_and_rule_only_configs(loaded):
    subset_report = loaded.scenario("subset_eval")
    assert [d["abbr"] for d in subset_report["dumped"]["datasets"]] == ["GPQA_diamond_repeat_4", "IFEval"]
    gpqa, ifeval = subset_report["dumped"]["datasets"]
    assert gpqa["llm_judge"]["openai_api_base"] == "http://127.0.0.1:23334/v1" and ifeval["judge"] is None
    assert [row[0] for row in subset_report["dumped"]["summarizer"]["dataset_abbrs"]] == ["GPQA_diamond_repeat_4", "IFEval"]
    rule = loaded.scenario("rule_only_eval")
    assert [d["abbr"] for d in rule["dumped"]["datasets"]] == ["IFEval", "lcb_code_generation_repeat_6", "my_mc"]
    assert not any(d["judge"] or d["llm_judge"] or d["has_judge_cfg"] for d in rule["dumped"]["datasets"])
    assert rule["dumped"]["eval"]["runner"]["type"] == "lmeval_opencompass.LmevalLocalRunner"  # --fork-server


@pytest.mark.opencompass
def test_a_config_of_some_datasets_holds_only_them_and_no_row_of_a_group_it_cuts(loaded):
    report = loaded.scenario("some_eval")
    for stage in ("loaded", "dumped"):
        assert [d["abbr"] for d in report[stage]["datasets"]] == ["IFEval", "mmlu_pro_math", "mmlu_pro_law"]
        assert report[stage]["datasets"][0]["evaluator"] == "lmeval_opencompass.LmevalIFEvaluator"
    assert report["dumped"]["summarizer"]["dataset_abbrs"] == [["IFEval", "Prompt-level-strict-accuracy"]]
    assert report["tasks"] == [["IFEval"], ["mmlu_pro_math"], ["mmlu_pro_law"]]


@pytest.mark.opencompass
def test_user_datasets_load_and_prompt_through_custom_dataset(loaded):
    report = loaded.scenario("files_eval")
    built = report["built"]["datasets"]
    qa, mc = built["my_qa"], built["my_mc"]
    assert qa["columns"][:3] == ["question", "answer", "id"] and qa["rows"] == 2
    assert [p["prompt"] for p in qa["prompt"] if "prompt" in p] == ["What is 2+2?"]
    assert qa["evaluator"].endswith("GenericLLMEvaluator")
    judge_prompt = [p["prompt"] for p in qa["judge_prompt"] if "prompt" in p]
    assert judge_prompt[0] == prompts.JUDGE_SYSTEM_PROMPT
    for marker in ("<Original Question Begin>: \nWhat is 2+2?\n<Original Question End>",
                   "<Gold Target Begin>: \n4\n<Gold Target End>",
                   "<Predicted Answer Begin>: \nPREDICTED\n<Predicted End>"):
        assert marker in judge_prompt[1]
    assert qa["judge_model"] == dict(path="judge-served", keys=["sk-judge-key"], url="http://127.0.0.1:23334/v1",
                                     tokenizer_type="hf", max_workers=32, temperature=0.001, mode="mid")
    assert mc["columns"][:5] == ["question", "A", "B", "C", "answer"]
    assert [p["prompt"] for p in mc["prompt"] if "prompt" in p] == [
        "Answer the following multiple choice question. The last line of your response should be of the following "
        "format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of ABC.\n\nPick the second\n\n"
        "A) one\nB) two\nC) three"]
    assert mc["evaluator"].endswith("AccEvaluator") and "judge_model" not in mc
    assert mc["postprocessed"] == {"Thinking it over.\nANSWER: B": "B", "The answer is (A).": "A", "no idea": ""}
    qa_cfg = next(d for d in report["task"]["datasets"] if d["abbr"] == "my_qa")
    assert qa_cfg["path"] == qa_cfg["dataset_cfg_path"] == str(loaded.data / "my_qa.jsonl")
    assert qa_cfg["dict_postprocessor"]["type"].endswith("generic_llmjudge_postprocess")


@pytest.mark.opencompass
def test_grader_template_is_opencompass_wording(loaded):
    assert loaded.scenarios.result()["grader_template"] == prompts.GRADER_TEMPLATE


@pytest.mark.opencompass
def test_arbitrary_strings_survive_every_opencompass_reload(loaded):
    report = loaded.trips.result()
    assert len(report["configs"]) == len(loaded.cases)
    for case, config in zip(loaded.cases, report["configs"]):
        the_plan = round_trip_plan(case)
        model, judge = model_expectations(the_plan), judge_expectations(the_plan)
        for stage in ("loaded", "dumped", "task"):
            seen = config[stage]
            assert subset(seen["models"][0], model) == model, (stage, case)
            (dataset,) = seen["datasets"]
            assert (dataset["abbr"], dataset["path"], dataset["dataset_cfg_path"]) == (
                the_plan.datasets[0].name, the_plan.datasets[0].path, the_plan.datasets[0].path), (stage, case)
            assert subset(dataset["judge"], judge) == judge, (stage, case)


@pytest.mark.opencompass
def test_braces_load_exactly_but_opencompass_own_reload_rewrites_them(loaded):
    """Why render_config refuses '{{': the config itself is safe, OpenCompass's re-dump is not."""
    plain_config, lazy_config = loaded.values.result()["configs"]
    for config in (plain_config, lazy_config):
        assert [config["loaded"][f"value_{i}"] for i in range(len(loaded.braces))] == loaded.braces
    reloaded = [lazy_config["reloaded"][f"value_{i}"] for i in range(len(loaded.braces))]
    assert reloaded[0] != loaded.braces[0] and "{{" not in reloaded[0]  # {{ fileDirname }} substituted
    assert reloaded[2] == "a" + "dumped.py" + "b"
