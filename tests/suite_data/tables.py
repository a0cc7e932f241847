"""Run in OpenCompass's venv (it has pyarrow and datasets, lmeval's has not), by chat_suite.py:
`python tables.py SPEC.json` writes the suite's two tabular datasets from the rows in SPEC:

- MMLU-Pro as the Hugging Face repo TIGER-Lab/MMLU-Pro lays it out, which OpenCompass reads with
  `load_dataset(COMPASS_DATA_CACHE/data/mmlu_pro)`: data/{test,validation}-00000-of-00001.parquet;
- HLE as `load_dataset('cais/hle')` leaves it in a Hugging Face datasets cache (HF_DATASETS_CACHE):
  cais___hle/default/0.0.0/COMMIT/, which the same call finds there offline; and as the Hub serves
  it, data/test-00000-of-00001.parquet, for a test's mirror of the Hub (tests/data_mirror.py).
"""

import json
import os
import shutil
import sys
import tempfile

import pyarrow
import pyarrow.parquet
from datasets.packaged_modules.parquet.parquet import Parquet

HLE_COMMIT = "5a81a4c7271a2a2a312b9a690f0c2fde837e4c29"  # any revision id: the cache's folder name


def write_parquet(rows, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)


def write_hle(rows, cache):
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "test-00000-of-00001.parquet")
        write_parquet(rows, source)
        builder = Parquet(cache_dir=cache, dataset_name="hle", repo_id="cais/hle", config_name="default",
                          data_files={"test": source}, hash=HLE_COMMIT)
        builder.download_and_prepare()
    # The builder names its config after the data files it was given; a load from the Hub names it "default".
    made = os.path.dirname(os.path.dirname(builder.cache_dir))
    final = os.path.join(os.path.dirname(made), "default")
    shutil.rmtree(final, ignore_errors=True)
    os.rename(made, final)
    for name in os.listdir(cache):
        if name.endswith(".lock"):
            os.remove(os.path.join(cache, name))


def main(spec_path):
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    for split, rows in spec["mmlu_pro"].items():
        write_parquet(rows, os.path.join(spec["mmlu_pro_dir"], "data", f"{split}-00000-of-00001.parquet"))
    if spec.get("hle") is not None:
        write_hle(spec["hle"], spec["hf_datasets_cache"])
        write_parquet(spec["hle"], spec["hle_parquet"])


if __name__ == "__main__":
    main(sys.argv[1])
