"""The chat suite in miniature: a few items of each of its six datasets, written exactly where and
how OpenCompass 0.5.4's own loaders read them, the stand-in's answer key for them, and the score
every summary row must show, computed here from the items and the key alone.

Where each dataset lives (OpenCompass's `get_data_path` and the loaders, read in its source):

    COMPASS_DATA_CACHE/data/aime2025/aime2025.jsonl        CustomDataset: {question, answer}
    COMPASS_DATA_CACHE/data/gpqa/gpqa_diamond.csv          GPQADataset: the Idavidrein/gpqa CSV
                                                           (column 7 the question, 8-11 the options,
                                                           the right one first; shuffled by row)
    COMPASS_DATA_CACHE/data/ifeval/input_data.jsonl        IFEvalDataset: Google's IFEval rows
    COMPASS_DATA_CACHE/data/code_generation_lite/          LCBCodeGenerationDataset: the Hugging
                                                           Face dataset folder (loading script,
                                                           test6.jsonl for v6)
    COMPASS_DATA_CACHE/data/mmlu_pro/data/*.parquet        MMLUProDataset: TIGER-Lab/MMLU-Pro
    HF_DATASETS_CACHE/cais___hle/default/0.0.0/COMMIT/     HLEDataset: load_dataset('cais/hle')

Items are answered right, wrong and unparseably; repeated datasets get replies that vary from one
asking to the next (the stand-in's `replies`), so a question is k of n right. LiveCodeBench's
programs are run by OpenCompass's own evaluator: a right one, a wrong answer, a runtime error and
a time-out. IFEval's replies are checked by its own checker (sentence and word counts, a language
by langdetect, lower case, a markdown format).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import pickle
import re
import shutil
import subprocess
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from data_mirror import HLE_CARD, Mirror
from scenarios import judge_agrees
from toolkit import MODELS, NEW_PROCESSES, TOOLS, VENVS, Lmeval, Runner, describe, lmeval_env, only_run

HERE = Path(__file__).resolve().parent / "suite_data"
INVALID_MARKER = "[unsure]"  # the stand-in judge replies neither A nor B to an answer holding it (STANDIN_JUDGE_INVALID)


def without_reasoning(reply: str) -> str:
    """What the judge sees of a reply: OpenCompass's extract_non_reasoning_content drops <think>...</think>."""
    return re.sub(r"<think>.*?</think>", "", reply, flags=re.DOTALL).strip()


def judged_right(reply: str, gold: str) -> bool:
    return INVALID_MARKER not in reply and judge_agrees(without_reasoning(reply), gold)


@dataclass(frozen=True)
class Item:
    """One question: the text that identifies it in a prompt, and the replies the stand-in cycles
    through for it (one reply: the same each time)."""

    marker: str
    replies: tuple[str, ...]
    right: tuple[bool, ...]  # whether each reply is scored right, decided here (never by a run)

    @property
    def share(self) -> float:
        """The share of its n answers scored right (n a multiple of len(replies))."""
        return mean(self.right)


# ---------------------------------------------------------------- AIME 2025 (judged, 32 runs)

AIME = [  # (question, gold, replies)
    ("[aime-1] Find the remainder when 2 to the 10th power is divided by 1000.", "24",
     ("<think>2 to the 10th is 1024.</think>24",)),
    ("[aime-2] How many positive divisors does 5040 have that are multiples of 36?", "12", ("12", "13")),
    ("[aime-3] Find the number of ordered pairs of integers with a product of 588.", "36", (f"36 {INVALID_MARKER}",)),
]

# ---------------------------------------------------------------- GPQA diamond (rule, then judge, 4 runs)

GPQA = [  # (question, [right option, three wrong ones], replies as functions of the gold letter)
    ("[gpqa-1] Which particle mediates the electromagnetic force?", ["photon", "gluon", "W boson", "graviton"],
     lambda gold: (f"It is the photon.\nANSWER: {gold}",)),
    ("[gpqa-2] What is the oxidation state of Mn in KMnO4?", ["+7", "+2", "+4", "+6"],
     lambda gold: (gold,)),  # no 'ANSWER:': the rule misses it, the judge finds it right
    ("[gpqa-3] Which organelle holds most of a cell's ATP synthase?", ["mitochondrion", "nucleus", "ribosome", "Golgi"],
     lambda gold: (f"ANSWER: {'A' if gold != 'A' else 'B'}",)),
    ("[gpqa-4] What is the spin of a deuteron?", ["1", "0", "1/2", "3/2"],
     lambda gold: (f"ANSWER: {gold}", f"ANSWER: {'A' if gold != 'A' else 'B'}")),
]
GPQA_SHUFFLES = ("ABCD", "BCDA", "CDAB", "DABC")  # row k (from 1) is shown as GPQA_SHUFFLES[k % 4]
GPQA_RULE = re.compile(r"(?i)ANSWER\s*:\s*([A-D])")


def gpqa_gold(row: int) -> str:
    """The letter the right option (the CSV's first) is shown under, for data row ROW (from 1)."""
    return "ABCD"[GPQA_SHUFFLES[row % 4].index("A")]


def gpqa_right(reply: str, gold: str) -> bool:
    """The cascade: right by the rule (the last line's letter), else by the judge."""
    found = GPQA_RULE.search(reply)
    return bool(found and found.group(1) == gold) or judged_right(reply, gold)


# ---------------------------------------------------------------- IFEval (rule)

IFEVAL = [  # (prompt, instruction ids, their kwargs, reply, follows every instruction)
    ("[ifeval-1] Describe a cat in fewer than 3 sentences.", ["length_constraints:number_sentences"],
     [{"relation": "less than", "num_sentences": 3}], "Cats are small hunters. They sleep most of the day.", True),
    ("[ifeval-2] Describe a dog in fewer than 3 sentences.", ["length_constraints:number_sentences"],
     [{"relation": "less than", "num_sentences": 3}],
     "Dogs are loyal. They like to run. They bark at strangers. They love their owners.", False),
    ("[ifeval-3] Describe the sea. Your entire response should be in French, no other language is allowed.",
     ["language:response_language"], [{"language": "fr"}],
     "La mer est immense et profonde, elle change de couleur avec le ciel et les saisons de l'année.", True),
    ("[ifeval-4] Explain what rain is. Answer with at least 30 words.", ["length_constraints:number_words"],
     [{"relation": "at least", "num_words": 30}], "Rain is water falling from clouds.", False),
    ("[ifeval-5] Describe a tree. Your entire response should be in English, and in all lowercase letters.",
     ["change_case:english_lowercase"], [{}],
     "a tree is a tall plant with a woody trunk, many branches and green leaves that fall in the autumn.", True),
    ("[ifeval-6] Name three fruits. Your answer must contain exactly 3 bullet points in markdown format.",
     ["detectable_format:number_bullet_lists"], [{"num_bullets": 3}], "* apple\n* pear\n* plum", True),
]

# ---------------------------------------------------------------- LiveCodeBench v6 (runs the code, 6 runs)


def fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```"


SUM_RIGHT = "a, b = map(int, input().split())\nprint(a + b)"
SUM_WRONG = "a, b = map(int, input().split())\nprint(a - b)"
RUNTIME_ERROR = "a, b = map(int, input().split())\nprint(a // 0)"
TIME_OUT = "a, b = map(int, input().split())\nwhile True:\n    a += 1"
ADD_RIGHT = "class Solution:\n    def addNumbers(self, a: int, b: int) -> int:\n        return a + b"

STDIN_TESTS = [("1 2\n", "3\n"), ("5 7\n", "12\n")]
LCB = [  # (title, question, starter code, function name, [(input, output)], replies, each right or not)
    ("A plus B", "[lcb-1] Read two integers and print their sum.", "", None, STDIN_TESTS,
     (SUM_RIGHT, SUM_RIGHT, SUM_WRONG), (True, True, False)),
    ("A minus nothing", "[lcb-2] Read two integers and print their sum, again.", "", None, STDIN_TESTS,
     (SUM_WRONG,), (False,)),
    ("Division", "[lcb-3] Read two integers and print their sum, once more.", "", None, STDIN_TESTS,
     (RUNTIME_ERROR,), (False,)),
    ("Slow", "[lcb-4] Read two integers and print their sum, quickly.", "", None, [("1 2\n", "3\n")],
     (TIME_OUT, SUM_WRONG, SUM_WRONG, SUM_WRONG, SUM_WRONG, SUM_WRONG), (False,) * 6),
    ("Add numbers", "[lcb-5] Return the sum of a and b.",
     "class Solution:\n    def addNumbers(self, a: int, b: int) -> int:\n        ", "addNumbers",
     [("1\n2", "3"), ("-4\n10", "6")], (ADD_RIGHT,), (True,)),
]

# ---------------------------------------------------------------- MMLU-Pro (judged, 14 categories)

MMLU_PRO_CATEGORIES = ["math", "physics", "chemistry", "law", "engineering", "other", "economics", "health",
                       "psychology", "business", "biology", "philosophy", "computer science", "history"]
# Per category, whether each of its questions is answered right (two or more each, so that each
# category's score has a standard error, and so the group's).
MMLU_PRO_RIGHT = {category: [position % 2 == 0, True] for position, category in enumerate(MMLU_PRO_CATEGORIES)}
MMLU_PRO_RIGHT["math"] = [True, True, False]
MMLU_PRO_RIGHT["physics"] = [False, True]
LETTERS = "ABCDEFGHIJ"

# ---------------------------------------------------------------- HLE (judged)

HLE = [  # (question, gold, reply, whether it has an image: those OpenCompass leaves out)
    ("[hle-1] What is the smallest prime greater than 100?", "101", "101", False),
    ("[hle-2] How many edges does a dodecahedron have?", "30", "30", False),
    ("[hle-3] What is the chromatic number of the Petersen graph?", "3", "4", False),
    ("[hle-4] Which shape is shown in the image?", "circle", "circle", True),
]


# The replies of a second model to some questions (by marker, in each table's own terms), for
# a second run to compare with the first.
OTHER_REPLIES = {
    "[aime-1]": ("25",),
    "[aime-2]": ("12",),
    "[gpqa-3]": lambda gold: (f"ANSWER: {gold}",),
    "[ifeval-2]": ("Dogs are loyal. They bark at strangers.", True),
}


@dataclass
class Key:
    """One model's answer key, and what it scores."""

    path: Path
    items: dict[str, list[Item]]  # summary dataset -> its questions, in order
    expected: dict[str, float]  # summary row (dataset) -> its score in percent


@dataclass
class SuiteData:
    root: Path
    compass: Path  # COMPASS_DATA_CACHE
    hf_datasets: Path  # HF_DATASETS_CACHE, under HF_HOME
    key: Key  # the first model's
    other: Key  # a second model's (OTHER_REPLIES)

    def env(self, key: Key | None = None) -> dict[str, str]:
        """What a user's shell holds for the data, and the stand-in's settings for KEY (the first)."""
        return {"COMPASS_DATA_CACHE": str(self.compass), "HF_HOME": str(self.hf_datasets.parent),
                **self.standin_env(key)}

    def standin_env(self, key: Key | None = None) -> dict[str, str]:
        return {"STANDIN_ANSWER_KEY": str((key or self.key).path), "STANDIN_JUDGE_INVALID": INVALID_MARKER}

    @property
    def hle_parquet(self) -> Path:
        """HLE's rows as the Hub serves them (data/test-00000-of-00001.parquet of cais/hle)."""
        return self.root / "hub" / "hle-test.parquet"


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _private_tests(cases: list[dict]) -> str:
    """LiveCodeBench's encoding of the hidden tests: base64 of zlib of a pickled JSON string."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def _marker(text: str) -> str:
    return text[:text.index("]") + 1]


def _mmlu_pro_rows() -> list[tuple[str, dict, bool]]:
    """(category, test row, answered right) of each MMLU-Pro question: ten options, the gold letter varying."""
    rows = []
    for category in MMLU_PRO_CATEGORIES:
        for position, right in enumerate(MMLU_PRO_RIGHT[category]):
            number = len(rows)
            gold = LETTERS[number % len(LETTERS)]
            question = f"[mmlu-{number}] A question of {category}, number {position}: which option is right?"
            rows.append((category, {"question_id": number, "question": question,
                                    "options": [f"option {letter}" for letter in LETTERS], "answer": gold,
                                    "answer_index": LETTERS.index(gold), "cot_content": "", "category": category,
                                    "src": f"ori_mmlu-{category}"}, right))
    return rows


def write_data(suite: SuiteData, hle: bool) -> None:
    """The datasets' files, where OpenCompass reads them."""
    data = suite.compass / "data"
    _jsonl(data / "aime2025" / "aime2025.jsonl", [{"question": q, "answer": gold} for q, gold, _ in AIME])

    # GPQA: the real CSV's columns, the right option first
    header = ["Pre-Revision Question", "Pre-Revision Correct Answer", "Pre-Revision Incorrect Answer 1",
              "Pre-Revision Incorrect Answer 2", "Pre-Revision Incorrect Answer 3", "Pre-Revision Explanation",
              "Self-reported question-writing time (minutes)", "Question", "Correct Answer", "Incorrect Answer 1",
              "Incorrect Answer 2", "Incorrect Answer 3", "Explanation", "Subdomain"]
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(header)
    for question, options, _ in GPQA:
        writer.writerow(["", "", "", "", "", "", "5", question, *options, "because", "Physics"])
    (data / "gpqa").mkdir(parents=True)
    (data / "gpqa" / "gpqa_diamond.csv").write_text(table.getvalue(), encoding="utf-8")

    # IFEval: kwargs as the real file has them, every argument of the checker present, unused ones null
    unused = {"num_highlights": None, "num_paragraphs": None, "keywords": None, "num_bullets": None}
    _jsonl(data / "ifeval" / "input_data.jsonl", [
        {"key": 1000 + position, "prompt": prompt, "instruction_id_list": ids,
         "kwargs": [{**unused, **kwargs} for kwargs in kwargs_list]}
        for position, (prompt, ids, kwargs_list, _, _) in enumerate(IFEVAL)])

    # LiveCodeBench: the Hugging Face folder, v6's shard
    lcb = data / "code_generation_lite"
    lcb.mkdir(parents=True)
    shutil.copy(HERE / "code_generation_lite.py", lcb / "code_generation_lite.py")
    rows = []
    for position, (title, question, starter, function, tests, _, _) in enumerate(LCB):
        testtype = "functional" if function else "stdin"
        cases = [{"input": given, "output": wanted, "testtype": testtype} for given, wanted in tests]
        rows.append({"question_title": title, "question_content": question,
                     "platform": "leetcode" if function else "atcoder", "question_id": f"lcb{position + 1}",
                     "contest_id": "weekly-400", "contest_date": "2025-03-01T00:00:00", "starter_code": starter,
                     "difficulty": "easy", "public_test_cases": json.dumps(cases[:1]),
                     "private_test_cases": _private_tests(cases[1:]),
                     "metadata": json.dumps({"func_name": function} if function else {})})
    _jsonl(lcb / "test6.jsonl", rows)

    # MMLU-Pro (parquet) and HLE (a datasets cache), written in OpenCompass's venv
    validation = [{"question_id": 10_000 + position, "question": f"An example of {category}.", "options": ["yes", "no"],
                   "answer": "A", "answer_index": 0, "cot_content": "A: Let's think step by step. Yes.",
                   "category": category, "src": f"ori_mmlu-{category}"}
                  for position, category in enumerate(MMLU_PRO_CATEGORIES)]
    spec = {"mmlu_pro_dir": str(data / "mmlu_pro"),
            "mmlu_pro": {"test": [row for _, row, _ in _mmlu_pro_rows()], "validation": validation},
            "hf_datasets_cache": str(suite.hf_datasets), "hle_parquet": str(suite.hle_parquet), "hle": None}
    if hle:
        spec["hle"] = [{"id": f"hle{position}", "question": question,
                        "image": "data:image/png;base64,iVBORw0KGgo=" if image else "", "image_preview": None,
                        "answer": gold, "answer_type": "exactMatch", "author_name": "lmeval",
                        "rationale": "", "rationale_image": None, "raw_subject": "Mathematics",
                        "category": "Math", "canary": "lmeval test data"}
                       for position, (question, gold, _, image) in enumerate(HLE)]
    spec_path = suite.root / "tables.json"
    spec_path.write_text(json.dumps(spec))
    subprocess.run([str(VENVS / "opencompass" / "bin" / "python"), str(HERE / "tables.py"), str(spec_path)],
                   check=True, capture_output=True, timeout=300)


def write_key(path: Path, other: dict, hle: bool) -> Key:
    """The stand-in's key at PATH, each question's replies from the tables (or OTHER, by marker),
    and whether each reply is scored right, decided here."""
    key: list[dict] = []
    items: dict[str, list[Item]] = {}

    def answer(dataset: str, marker: str, replies: tuple[str, ...], right: tuple[bool, ...]) -> None:
        key.append({"match": marker, "replies": list(replies)})
        if dataset:
            items.setdefault(dataset, []).append(Item(marker, replies, right))

    for question, gold, replies in AIME:
        replies = other.get(_marker(question), replies)
        answer("aime2025_repeat_32", _marker(question), replies, tuple(judged_right(r, gold) for r in replies))
    for row, (question, _, replies_for) in enumerate(GPQA, start=1):
        gold = gpqa_gold(row)
        replies = other.get(_marker(question), replies_for)(gold)
        answer("GPQA_diamond_repeat_4", _marker(question), replies, tuple(gpqa_right(r, gold) for r in replies))
    for prompt, _, _, reply, follows in IFEVAL:
        reply, follows = other.get(_marker(prompt), (reply, follows))
        answer("IFEval", _marker(prompt), (reply,), (follows,))
    for _, question, _, _, _, replies, right in LCB:
        assert len(right) == len(replies)
        answer("lcb_code_generation_repeat_6", _marker(question), tuple(fenced(r) for r in replies), right)
    for category, row, right in _mmlu_pro_rows():
        reply = row["answer"] if right else LETTERS[(row["question_id"] + 1) % len(LETTERS)]
        answer(f"mmlu_pro_{category.replace(' ', '_')}", _marker(row["question"]), (reply,),
               (judged_right(reply, row["answer"]),))
    for question, gold, reply, image in HLE:
        # One with an image is never asked (OpenCompass leaves it out): its reply would be right, so asking it shows.
        answer("" if image or not hle else "hle_llmjudge", _marker(question), (reply,), (judged_right(reply, gold),))
    path.write_text(json.dumps(key))
    return Key(path, items, expected_scores(items))


def write_suite(root: Path, hle: bool = True) -> SuiteData:
    """The six datasets under ROOT (HLE left out with HLE=False), and two models' keys."""
    root.mkdir(parents=True, exist_ok=True)
    suite = SuiteData(root, root / "compass", root / "hf" / "datasets",
                      write_key(root / "key.json", {}, hle), write_key(root / "other-key.json", OTHER_REPLIES, hle))
    write_data(suite, hle)
    return suite


def expected_scores(items: dict[str, list[Item]]) -> dict[str, float]:
    """Each summary row's score in percent: a dataset's mean over its questions of the share of
    its answers right (over n runs, the runs' average is that too), mmlu_pro the mean of its
    categories, core_average the mean of the six."""
    scores = {name: 100 * mean(item.share for item in questions) for name, questions in items.items()}
    categories = [name for name in scores if name.startswith("mmlu_pro_")]
    scores["mmlu_pro"] = mean(scores[name] for name in categories)
    core = ["aime2025_repeat_32", "GPQA_diamond_repeat_4", "IFEval", "lcb_code_generation_repeat_6", "mmlu_pro",
            "hle_llmjudge"]
    if all(name in scores for name in core):
        scores["core_average"] = mean(scores[name] for name in core)
    return scores


# ---------------------------------------------------------------- the data as its sources publish it

# OpenCompass 0.5.4's table of archives (utils/datasets_info.py DATASETS_URL): the name download_dataset
# finds in each data path, and the archive, whose top folder lands in COMPASS_DATA_CACHE/data/.
ARCHIVES = {"/aime2025": "aime2025", "/gpqa/": "gpqa", "/ifeval/": "ifeval",
            "/code_generation_lite": "code_generation_lite", "mmlu_pro": "mmlu_pro"}
OPENCOMPASS_URL = "http://opencompass.oss-cn-shanghai.aliyuncs.com/datasets/data/{}.zip"


@dataclass(frozen=True)
class Published:
    """The suite's data as a mirror serves it: OpenCompass's archives at their paths, cais/hle as
    the Hub has it, and the table that gives these archives' md5 (they are not OpenCompass's)."""

    files: dict[str, bytes]
    hub: dict[str, dict[str, bytes]]
    internal_table: dict  # ~/.OPENCOMPASS_INTERNAL_DATA_URL.json: OpenCompass's own file for that

    def home(self, folder: Path) -> Path:
        """A HOME holding the table, where OpenCompass (and lmeval data pull) read it."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".OPENCOMPASS_INTERNAL_DATA_URL.json").write_text(json.dumps(self.internal_table))
        return folder


def zipped(folder: Path) -> bytes:
    """FOLDER as OpenCompass's archives hold a dataset: its own name the top folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder.parent))
    return buffer.getvalue()


def published(suite: SuiteData) -> Published:
    files, table = {}, {}
    for name, archive in ARCHIVES.items():
        content = zipped(suite.compass / "data" / archive)
        url = OPENCOMPASS_URL.format(archive)
        files[url.split("/", 3)[3]] = content
        table[name] = {"url": url, "md5": hashlib.md5(content).hexdigest()}
    hub = {"cais/hle": {"README.md": HLE_CARD, "data/test-00000-of-00001.parquet": suite.hle_parquet.read_bytes()}}
    return Published(files, hub, table)


def offline_env(**extra: str) -> dict[str, str]:
    """lmeval's environment with no way out but loopback: the Hub and any proxy at a closed port, no data
    settings."""
    dead = "http://127.0.0.1:9"
    env = lmeval_env(HF_ENDPOINT=dead, http_proxy=dead, https_proxy=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead,
                     no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost", **extra)
    for name in ("COMPASS_DATA_CACHE", "HF_HOME", "HF_DATASETS_CACHE", "HF_TOKEN"):
        env.pop(name, None)
    return env


# ---------------------------------------------------------------- the chat runs several modules read

CHAT_RUN_SECONDS = 900
OTHER_DATASETS = "aime2025,gpqa,ifeval"


def chat_args(work_dir: Path, model: str = "demo-chat", *extra: str) -> list[str]:
    """`lmeval run MODEL --task chat` as a user runs it: the model on GPU 0, the judge on GPU 1."""
    return [str(MODELS / model), "--task", "chat", "--gpus", "0", "--judge-model", str(MODELS / "demo-judge"),
            "--judge-gpus", "1", "--judge-tp", "1", "-w", str(work_dir), *TOOLS, *extra]


@dataclass
class ChatRuns:
    suite: SuiteData
    work_dir: Path
    pulled: Path  # the data folder `lmeval data pull --mirror` made, which the full run reads
    pulls: list[Lmeval]  # the pull, then a second one that finds everything there
    mirror_requests: list[list[tuple[str, str]]]  # what the mirror received during each pull
    check: Lmeval  # `lmeval data check PULLED`
    full: Lmeval  # `lmeval run demo-chat --task chat --data-dir PULLED` offline, the first key
    full_dir: Path
    other: Lmeval  # `lmeval run demo-chat --task chat --datasets OTHER_DATASETS`, the other key
    other_dir: Path
    leftovers: dict[str, list[str]]  # run -> processes left after it (must be none)


_RUNS: dict[str, ChatRuns] = {}


def chat_runs(folder: Path) -> ChatRuns:
    """Built once per session: the suite's data pulled from a loopback mirror (twice) and checked;
    the whole suite from that folder with the network off and the first key, OpenCompass's
    processes started anew (the default); then three of its datasets from COMPASS_DATA_CACHE with
    the other key and --fork-server, in one work dir (each exit code and
    output is the tests' to check)."""
    if "runs" in _RUNS:
        return _RUNS["runs"]
    suite = write_suite(folder / "data")
    work_dir, pulled = folder / "out", folder / "pulled"
    runner = Runner(folder)
    left = {}
    try:
        source = published(suite)
        pulls, requests = [], []
        with Mirror(files=source.files, hub=source.hub) as mirror:
            env = lmeval_env(HOME=str(source.home(folder / "home")), HF_ENDPOINT=mirror.url, HF_TOKEN="hf_lmeval_test",
                             NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
            for _ in range(2):
                seen = len(mirror.requests)
                pulls.append(runner.run("data", "pull", "--task", "chat", "--dest", str(pulled), "--mirror", mirror.url,
                                        env=env, timeout=300))
                requests.append(mirror.requests[seen:])
        check = runner.run("data", "check", str(pulled), env=offline_env(), timeout=60)
        full = runner.run("run", *chat_args(work_dir, "demo-chat", "--data-dir", str(pulled)),
                          env=offline_env(**suite.standin_env(), **NEW_PROCESSES), work_dir=work_dir,
                          timeout=CHAT_RUN_SECONDS)
        left["full"] = describe(runner.leftovers()).splitlines()
        full_dir = only_run(work_dir)
        other = runner.run("run", *chat_args(work_dir, "demo-chat", "--datasets", OTHER_DATASETS),
                           env=lmeval_env(**suite.env(suite.other)), work_dir=work_dir, timeout=CHAT_RUN_SECONDS)
        left["other"] = describe(runner.leftovers()).splitlines()
        other_dir = next(path for path in work_dir.glob("2*") if path != full_dir)
    finally:
        runner.teardown()
    _RUNS["runs"] = ChatRuns(suite, work_dir, pulled, pulls, requests, check, full, full_dir, other, other_dir, left)
    return _RUNS["runs"]
