"""GPU assignment against a given inventory: the checks users hit before any server starts."""

from __future__ import annotations

import sys
import types

import pytest

from lmeval.exceptions import StageFailed, UsageError
from lmeval.gpus import Gpu, assign, inventory, parse_gpu_list

FREE = [Gpu(i, "H200", 0, 0) for i in range(4)]
ONE_BUSY = [Gpu(0, "H200", 0, 0), Gpu(1, "H200", 80 << 30, 1), Gpu(2, "H200", 0, 0), Gpu(3, "H200", 0, 0)]


def test_explicit_gpus_checked_against_inventory():
    assert assign([2, 3], 2, FREE) == ([2, 3], None)


def test_free_gpus_are_picked_skipping_busy_and_taken():
    assert assign(None, 2, ONE_BUSY) == ([0, 2], None)
    assert assign(None, 2, ONE_BUSY, taken=frozenset({0})) == ([2, 3], None)


def test_without_inventory_explicit_ids_are_used_with_a_warning():
    assert assign([0, 1], 2, None) == ([0, 1], "no NVIDIA driver answered; using GPUs 0,1 as given, unchecked")


@pytest.mark.parametrize("requested, count, gpus, message", [
    ([0], 2, FREE, "--gpus lists 1 GPU(s) but --tp 2 needs 2; list 2 GPUs or change --tp"),
    ([0, 7], 2, FREE, "--gpus: GPU 7 does not exist; this machine has GPUs 0,1,2,3"),
    ([0, 1], 2, ONE_BUSY, "--gpus: GPU 1 is busy (another process uses it); pick free GPUs or stop that process"),
    (None, 4, ONE_BUSY, "4 free GPU(s) needed but only 3 are free (0,2,3); free some or pass --gpus"),
    (None, 1, None, "no NVIDIA driver answered, so lmeval cannot pick GPUs; pass --gpus 0,1,..."),
])
def test_refusals(requested, count, gpus, message):
    with pytest.raises(UsageError) as caught:
        assign(requested, count, gpus, need=(f"--tp {count}", "--tp"))
    assert caught.value.message == message


@pytest.mark.parametrize("text, message", [
    ("0,0", "--gpus lists GPU 0 twice; give each GPU once"),
    ("0,x", "--gpus takes GPU indices separated by commas, like 0,1; got '0,x'"),
    ("-1", "--gpus takes GPU indices (0, 1, ...); got '-1'"),
])
def test_gpu_list_refusals(text, message):
    with pytest.raises(UsageError) as caught:
        parse_gpu_list(text)
    assert caught.value.message == message


def test_a_driver_failing_midway_is_one_clear_error(monkeypatch):
    """NVML answers, lists GPU 0, then fails on GPU 1 (a GPU fallen off the bus)."""
    class NVMLError(Exception):
        pass

    class Memory:
        used = 0

    def handle(index):
        if index == 1:
            raise NVMLError("GPU is lost")
        return index

    fake = types.SimpleNamespace(
        NVMLError=NVMLError, nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=handle, nvmlDeviceGetName=lambda h: "NVIDIA H200",
        nvmlDeviceGetMemoryInfo=lambda h: Memory(), nvmlDeviceGetComputeRunningProcesses=lambda h: [])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(StageFailed) as caught:
        inventory()
    assert caught.value.message == ("the NVIDIA driver failed while listing GPU 1 (GPU is lost); "
                                    "check the GPUs with nvidia-smi")
