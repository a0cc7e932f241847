"""Shared fixtures: where the project's venvs and stand-in live, and process hygiene."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENVS = Path(os.environ.get("LMEVAL_VENVS", REPO / ".venvs"))
STANDIN = REPO / "tests" / "standin" / "lmdeploy"


def venv_python(name: str) -> Path:
    """The python of one of the project's venvs; a missing venv fails the test, never skips it."""
    python = VENVS / name / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: run scripts/setup first")
    return python


@pytest.fixture
def lmdeploy_python() -> Path:
    return venv_python("lmdeploy")


@pytest.fixture
def venvs() -> Path:
    """The project's venvs folder, checked to hold OpenCompass (the e2e tests run it)."""
    venv_python("opencompass")
    return VENVS
