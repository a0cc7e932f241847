"""How much of the judge's prompts prefix caching can reuse: per dataset of a run, the share of
its judge prompts' length that is the prefix all of them share (the grading instructions before
the question), in characters and in whitespace-separated words. The judge's own tokenizer
(CompassVerifier's) is not available offline here; words track its tokens roughly.

Run it on a judged run: `.venvs/lmeval/bin/python bench/judge_prefix_share.py RUN_DIR`
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def judge_prompts(run_dir: Path) -> dict[str, list[str]]:
    """Each dataset's judge prompts, from the judge's result files OpenCompass wrote."""
    found: dict[str, list[str]] = {}
    for path in sorted((run_dir / "results").glob("*/*_replica*.json")):
        dataset = path.stem.split("_llm_judge_replica")[0].split("_replica")[0]
        for entry in json.loads(path.read_text()).values():
            prompt = entry.get("origin_prompt") if isinstance(entry, dict) else None
            if isinstance(prompt, list):
                prompt = "\n".join(str(turn.get("prompt", "")) for turn in prompt if isinstance(turn, dict))
            if isinstance(prompt, str):
                found.setdefault(dataset, []).append(prompt)
    return found


def shared_share(prompts: list[str], split) -> float:
    units = [split(prompt) for prompt in prompts]
    prefix = os.path.commonprefix(units)
    return len(prefix) * len(units) / sum(map(len, units))


def main() -> None:
    run_dir = Path(sys.argv[1])
    print("| dataset | judge prompts | shared prefix, words | mean prompt, words | shared share, characters | shared "
          "share, words |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for dataset, prompts in judge_prompts(run_dir).items():
        words = [prompt.split() for prompt in prompts]
        print(f"| {dataset} | {len(prompts)} | {len(os.path.commonprefix(words))} | "
              f"{sum(map(len, words)) / len(words):.0f} | {shared_share(prompts, list):.0%} | "
              f"{shared_share(prompts, str.split):.0%} |")


if __name__ == "__main__":
    main()
