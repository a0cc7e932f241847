"""Shared fixtures: where the project's venvs and stand-in live, and process hygiene."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_processes import VENVS, lmeval_runner_in


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


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    """The crash/resume chain of the fault tests (tests/fault_support.py): four OpenCompass
    stages with two server crashes, built once and read by test_faults and test_security."""
    from fault_support import OPENCOMPASS, crash_chain

    if not OPENCOMPASS.exists():
        pytest.fail(f"{OPENCOMPASS} is missing: run scripts/setup first")
    return crash_chain(tmp_path_factory.mktemp("chain"))


@pytest.fixture
def reaper(tmp_path):
    """Starts lmeval processes for a test and kills whatever they left once it is over."""
    from fault_support import Reaper

    reaper = Reaper(tmp_path / "logs")
    yield reaper
    reaper.reap()


@pytest.fixture
def lmeval_runner(tmp_path):
    """Starts lmeval processes for a test (tests/helpers_processes.py) and, once it is over,
    kills them and whatever they left."""
    with lmeval_runner_in(tmp_path) as runner:
        yield runner
