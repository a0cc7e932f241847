"""A run's training step: where its checkpoint sits on the training curve, so the scores of a
sweep's checkpoints land as one line in a tracker (lmeval.tracking) and in `compare --plot`.

Given with --step N, or read from the checkpoint folder's name in the forms the common trainers
write: Hugging Face's `checkpoint-1200`, Megatron's `iter_0001200`, DeepSpeed's `global_step1200`,
and `step1200` / `step_1200` / `step-1200`. A converted checkpoint one folder down
(`iter_0001200/hf`) counts too.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

STEP_FORMS = "checkpoint-1200, iter_0001200, global_step1200, step1200 (or step_1200, step-1200)"
_STEP_NAME = re.compile(r"(?:checkpoint-|iter_|global_step|step[-_]?)(\d+)", re.IGNORECASE)


def checkpoint_step(model: str | None) -> int | None:
    """The step MODEL's folder name (or its parent's) gives, if either is named in a form of STEP_FORMS."""
    if not model:
        return None
    path = PurePath(model.rstrip("/"))
    for name in (path.name, path.parent.name):
        if found := _STEP_NAME.fullmatch(name):
            return int(found.group(1))
    return None


def run_step(manifest: dict[str, Any]) -> int | None:
    """A run's step: recorded when it was made (--step or its folder's name), else read from the
    folder name of the model it evaluated (runs made before lmeval recorded steps)."""
    if manifest.get("step") is not None:
        return int(manifest["step"])
    return checkpoint_step((manifest.get("inputs") or {}).get("model"))


def run_steps(manifests: list[dict[str, Any]]) -> list[int] | None:
    """The steps of runs, when each has its own: only then do they make a curve."""
    steps = [run_step(manifest) for manifest in manifests]
    return steps if None not in steps and len(set(steps)) == len(steps) else None
