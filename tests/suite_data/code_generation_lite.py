"""The loading script of the Hugging Face dataset livecodebench/code_generation_lite, as its
folder in OpenCompass's data holds it: `load_dataset(FOLDER, split="test", version_tag="v6",
trust_remote_code=True)` reads the shard files of that version (v6: test6.jsonl)."""

import json

import datasets

SHARDS = {f"v{n}": [f"test{'' if n == 1 else n}.jsonl"] for n in range(1, 7)}
SHARDS.update({f"release_v{n}": [f"test{'' if k == 1 else k}.jsonl" for k in range(1, n + 1)] for n in range(1, 7)})
SHARDS["release_latest"] = SHARDS["release_v6"]


class LCBCodeGenerationConfig(datasets.BuilderConfig):
    def __init__(self, version_tag="release_latest", **kwargs):
        super().__init__(name=version_tag, version=datasets.Version("1.0.0"), **kwargs)
        self.version_tag = version_tag


class LCBCodeGeneration(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = LCBCodeGenerationConfig
    BUILDER_CONFIGS = [LCBCodeGenerationConfig(version_tag=tag) for tag in SHARDS]
    DEFAULT_CONFIG_NAME = "release_latest"

    def _info(self):
        text = datasets.Value("string")
        return datasets.DatasetInfo(features=datasets.Features({
            name: text for name in ("question_title", "question_content", "platform", "question_id", "contest_id",
                                    "contest_date", "starter_code", "difficulty", "public_test_cases",
                                    "private_test_cases", "metadata")}))

    def _split_generators(self, dl_manager):
        files = dl_manager.download_and_extract(SHARDS[self.config.version_tag])
        return [datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={"files": files})]

    def _generate_examples(self, files):
        key = 0
        for path in files:
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield key, json.loads(line)
                        key += 1
