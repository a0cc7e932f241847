"""Planning a role's servers: replicas on disjoint GPU groups behind one proxy, one key."""

from __future__ import annotations

import pytest

from lmeval import gpus as gpu_inventory
from lmeval.exceptions import UsageError
from lmeval.fleet import plan_server_set

MODEL = "opencompass/CompassVerifier-32B"


@pytest.fixture(autouse=True)
def four_free_gpus(monkeypatch):
    gpus = [gpu_inventory.Gpu(i, "NVIDIA H200", 0, 0) for i in range(4)]
    monkeypatch.setattr(gpu_inventory, "cached_inventory", lambda: gpus)


def plan(**options):
    values = dict(model=MODEL, gpus=None, tp=None, port=None, host="127.0.0.1", server_args="")
    values.update(options)
    return plan_server_set("judge", **values)


def test_one_server_without_proxy():
    server_set, warning = plan(gpus="2,3")
    assert warning is None and server_set.proxy is None
    (only,) = server_set.replicas
    assert (only.role, only.gpus, only.tp, only.proxy_url) == ("judge", (2, 3), 2, None)
    assert server_set.capacity() == 1024  # LMDeploy's default on an H200


def test_replicas_split_gpus_in_order_behind_one_proxy_with_one_key():
    server_set, _ = plan(gpus="0,1,2,3", tp=2, replicas=2, port=23333, server_args="--max-batch-size 256")
    proxy = server_set.proxy
    assert (proxy.role, proxy.port, proxy.gpus) == ("judge-proxy", 23333, ())
    assert [(r.role, r.gpus, r.tp) for r in server_set.replicas] == [("judge-0", (0, 1), 2), ("judge-1", (2, 3), 2)]
    assert {r.proxy_url for r in server_set.replicas} == {"http://127.0.0.1:23333"}
    assert {r.api_key.get_secret_value() for r in server_set.replicas} == {proxy.api_key.get_secret_value()}
    assert len({proxy.port, *(r.port for r in server_set.replicas)}) == 3
    assert server_set.front is proxy
    assert server_set.capacity() == 512


def test_replicas_pick_free_gpus():
    server_set, _ = plan(tp=1, replicas=3, taken_gpus=frozenset({1}))
    assert [r.gpus for r in server_set.replicas] == [(0,), (2,), (3,)]


def test_tp_defaults_to_the_gpus_per_replica():
    server_set, _ = plan(gpus="0,1,2,3", replicas=2)
    assert [r.tp for r in server_set.replicas] == [2, 2]


@pytest.mark.parametrize("options, message", [
    (dict(gpus="0,1,2", tp=2, replicas=2), "--judge-gpus lists 3 GPU(s) but --judge-tp 2 × --judge-replicas 2 "
                                           "needs 4; list 4 GPUs or change --judge-tp or --judge-replicas"),
    (dict(replicas=0), "--judge-replicas must be at least 1"),
    (dict(port=5000, avoid_ports=frozenset({5000})), "--judge-port 5000 is already another server's; pick another"),
])
def test_refusals(options, message):
    with pytest.raises(UsageError) as caught:
        plan(option_prefix="judge-", **options)
    assert caught.value.message == message
