"""A data folder's manifest and its checks (lmeval.datadir), and where a pull fetches from
(lmeval.datapull.mirrored), on files made here: fast, no tool venv."""

from __future__ import annotations

import hashlib

from lmeval import datadir
from lmeval.datapull import mirrored


def folder_with(tmp_path, files: dict[str, dict[str, bytes]]):
    """A data folder holding FILES (dataset -> path -> content), its manifest made by lmeval."""
    manifest = datadir.DataManifest()
    for name, contents in files.items():
        paths = []
        for relative, content in contents.items():
            path = tmp_path / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            paths.append(path)
        manifest.datasets[name] = datadir.DatasetRecord(source=f"http://mirror/{name}.zip", opencompass="0.5.4",
                                                        files=datadir.record_files(tmp_path, paths))
    manifest.save(tmp_path)
    return datadir.DataManifest.load(tmp_path)


def test_the_manifest_records_each_files_size_and_sha256(tmp_path):
    manifest = folder_with(tmp_path, {"gpqa": {"compass/data/gpqa/gpqa_diamond.csv": b"a,b\n"}})
    record = manifest.datasets["gpqa"].files["compass/data/gpqa/gpqa_diamond.csv"]
    assert (record.size, record.sha256) == (4, hashlib.sha256(b"a,b\n").hexdigest())
    assert [path.name for path in tmp_path.iterdir() if path.is_file()] == ["lmeval-data.json"]  # no partial left


def test_each_dataset_is_present_missing_or_corrupt(tmp_path):
    manifest = folder_with(tmp_path, {
        "aime2025": {"compass/data/aime2025/aime2025.jsonl": b"{}\n"},
        "gpqa": {"compass/data/gpqa/gpqa_diamond.csv": b"a,b\n"},
        "ifeval": {"compass/data/ifeval/input_data.jsonl": b"{}\n"},
        "code": {"compass/data/code_generation_lite/test6.jsonl": b"[]\n"},
    })
    (tmp_path / "compass/data/gpqa/gpqa_diamond.csv").write_bytes(b"a,c\n")  # same size
    (tmp_path / "compass/data/ifeval/input_data.jsonl").write_bytes(b"{}\n\n")
    (tmp_path / "compass/data/code_generation_lite/test6.jsonl").unlink()
    states = {state.dataset: (state.status, state.detail)
              for state in datadir.verify(tmp_path, manifest, ["aime2025", "gpqa", "ifeval", "code", "hle"])}
    assert states == {
        "aime2025": ("present", "1 file, 3 bytes, sha256 verified"),
        "gpqa": ("corrupt", f"{tmp_path}/compass/data/gpqa/gpqa_diamond.csv does not have the sha256 the manifest "
                            "records"),
        "ifeval": ("corrupt", f"{tmp_path}/compass/data/ifeval/input_data.jsonl has 4 bytes, not 3"),
        "code": ("missing", f"{tmp_path}/compass/data/code_generation_lite/test6.jsonl"),
        "hle": ("missing", f"not pulled into {tmp_path}"),
    }


def test_a_runs_data_hash_covers_its_datasets_only(tmp_path):
    one = folder_with(tmp_path / "one", {"gpqa": {"compass/data/gpqa/a.csv": b"1"}})
    two = folder_with(tmp_path / "two", {"gpqa": {"compass/data/gpqa/a.csv": b"1"},
                                         "hle": {"hf/cais___hle/x.arrow": b"2"}})
    three = folder_with(tmp_path / "three", {"gpqa": {"compass/data/gpqa/a.csv": b"3"}})
    assert one.selection_hash(["gpqa"]) == two.selection_hash(["gpqa"])  # pulling HLE later changes nothing
    assert one.selection_hash(["gpqa"]) != three.selection_hash(["gpqa"])
    assert two.selection_hash(["gpqa", "hle"]) != two.selection_hash(["gpqa"])


def test_a_mirror_serves_opencompasss_paths_under_its_own_address():
    url = "http://opencompass.oss-cn-shanghai.aliyuncs.com/datasets/data/gpqa.zip"
    assert mirrored(url, None) == url
    assert mirrored(url, "http://mirror.internal/opencompass/") == "http://mirror.internal/opencompass/datasets/data/gpqa.zip"


def test_a_run_reads_the_folder_offline(tmp_path):
    assert datadir.run_env(tmp_path) == {"COMPASS_DATA_CACHE": str(tmp_path / "compass"),
                                         "HF_DATASETS_CACHE": str(tmp_path / "hf"),
                                         "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
