"""Shared fixtures: the project's venvs, the crash chain, and a runner that leaves no process.

Markers say what a test needs beyond the lmeval venv (pyproject.toml lists them); the unmarked
tests are the fast tier (`scripts/test --fast`) and need no tool venv.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from toolkit import OPENCOMPASS, REPO, VENVS, Runner


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help="only the tests without a marker of pyproject.toml's list: no tool venv, no server")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--fast"):
        return
    needs = {line.split(":")[0].strip() for line in config.getini("markers")}
    fast = [item for item in items if not needs & {mark.name for mark in item.iter_markers()}]
    config.hook.pytest_deselected(items=[item for item in items if item not in fast])
    items[:] = fast


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
    """The project's venvs folder, checked to hold OpenCompass and LMDeploy."""
    venv_python("opencompass")
    venv_python("lmdeploy")
    return VENVS


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    """The crash/resume chain (tests/scenarios.py): four OpenCompass stages with two server
    crashes, built once and read by test_faults, test_security and test_results."""
    from scenarios import crash_chain

    if not OPENCOMPASS.exists():
        pytest.fail(f"{OPENCOMPASS} is missing: run scripts/setup first")
    return crash_chain(tmp_path_factory.mktemp("chain"))


@pytest.fixture(scope="session")
def chat_runs(tmp_path_factory):
    """Two runs of the chat suite in miniature (tests/chat_suite.py), built once and read by
    test_chat_suite, test_report and test_compare."""
    from chat_suite import chat_runs as build

    if not OPENCOMPASS.exists():
        pytest.fail(f"{OPENCOMPASS} is missing: run scripts/setup first")
    return build(tmp_path_factory.mktemp("chat"))


@pytest.fixture
def lmeval_runner(tmp_path):
    """Starts lmeval processes for a test (tests/toolkit.py) and, once it is over, kills them
    and whatever they left."""
    runner = Runner(tmp_path)
    try:
        yield runner
    finally:
        runner.teardown()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """One real Slurm cluster for the session (scripts/slurm-cluster: slurmctld and slurmd n1-n3,
    4 stand-in GPUs each; partitions gpu, all nodes, and tiny, n1 alone). SLURM_CONF is set for
    this process and every lmeval it starts while the cluster runs."""
    root = tmp_path_factory.mktemp("slurm")
    script = REPO / "scripts" / "slurm-cluster"
    started = subprocess.run([str(script), "start", str(root)], capture_output=True, text=True, timeout=120,
                             check=False)
    if started.returncode != 0:
        subprocess.run([str(script), "stop", str(root)], capture_output=True, timeout=120, check=False)
        pytest.fail(f"the test Slurm cluster did not start:\n{started.stdout}{started.stderr}")
    conf = started.stdout.strip().splitlines()[-1].removeprefix("SLURM_CONF=")
    os.environ["SLURM_CONF"] = conf
    try:
        yield Path(conf)
    finally:
        subprocess.run([str(script), "stop", str(root)], capture_output=True, timeout=120, check=False)
        del os.environ["SLURM_CONF"]
