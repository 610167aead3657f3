"""The Ray actor pool of reward workers on a real two-node Ray cluster on loopback (Ray's own
cluster_utils: separate raylets and object stores on one machine)."""

from __future__ import annotations

import time
import urllib.request

import pytest

from rewards.scorer import canonical_items
from tests.conftest import backend_skip_reason
from tests.integration.rewards.test_integrity import ADD, DOUBLED

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from learner.cluster import free_port  # noqa: E402
from rewards.ray_pool import RewardActorPool  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    backend = "docker" if backend_skip_reason("docker") is None else "bwrap"
    metrics_port = free_port()
    ray.shutdown()  # never reuse a connection an earlier test left behind
    # an explicit GCS port: the default one may still be held by a cluster an earlier test shut down
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False, "redis_port": free_port(),
        "metrics_export_port": metrics_port})
    try:  # a failed start must not leave this cluster's GCS and raylets running for the rest of the session
        c.add_node(num_cpus=2, resources={"reward": 2}, node_ip_address="127.0.0.1")
        assert c.address.startswith("127.0.0.1:"), f"Ray put the test cluster on {c.address}, not on loopback"
        ray.init(address=c.address, _node_ip_address="127.0.0.1")
        yield {"backend": backend, "metrics_port": metrics_port}
    finally:
        ray.shutdown()
        c.shutdown()


def items(n: int):
    wrong = [(ADD, "  return a - b;\n}\n"), (DOUBLED, "  return v;\n}\n")]
    base = canonical_items([ADD, DOUBLED]) + wrong
    return [base[i % len(base)] for i in range(n)]


def test_workers_run_on_the_reward_node_and_score_in_order(cluster):
    pool = RewardActorPool(num_workers=2, slots_per_worker=1, sandbox={"backend": cluster["backend"]},
                           resources={"reward": 1}, chunk_size=3)
    try:
        head = ray.get_runtime_context().get_node_id()
        nodes = set(ray.get([w.node_id.remote() for w in pool.workers]))
        assert head not in nodes and len(nodes) == 1  # placed by the custom resource, not on the head
        batch = items(16)
        scored = pool.score(batch)
        assert [s.task_id for s in scored] == [t.task_id for t, _ in batch]
        assert [s.passed for s in scored] == [True, True, False, False] * 4
    finally:
        pool.close()


def test_a_scorer_that_does_not_answer_is_an_error_naming_the_stage(cluster):
    pool = RewardActorPool(num_workers=1, slots_per_worker=1, sandbox={"backend": cluster["backend"]},
                           resources={"reward": 1}, call_timeout_s=0.05)
    try:
        with pytest.raises(RuntimeError, match=r"scoring: no reward chunk finished within 0.05s \(run.call_timeout_s\)"):
            pool.score(items(4))  # compiling takes longer than 50 ms: the pool must not wait forever
    finally:
        pool.close()


def test_killed_worker_loses_and_duplicates_nothing(cluster):
    pool = RewardActorPool(num_workers=2, slots_per_worker=1, sandbox={"backend": cluster["backend"]},
                           resources={"reward": 1}, chunk_size=2, max_inflight_per_worker=1)
    try:
        batch = items(24)
        import threading

        def killer():
            time.sleep(1.0)
            ray.kill(pool.workers[0], no_restart=True)

        thread = threading.Thread(target=killer)
        thread.start()
        scored = pool.score(batch)
        thread.join()
        assert len(scored) == 24 and [s.passed for s in scored] == [True, True, False, False] * 6
        assert pool.restarts >= 1
    finally:
        pool.close()


def test_reward_metrics_reach_the_metrics_endpoint(cluster):
    pool = RewardActorPool(num_workers=1, slots_per_worker=1, sandbox={"backend": cluster["backend"]},
                           resources={"reward": 1})
    try:
        pool.score(items(4))
    finally:
        pool.close()
    # metrics are exported by each node's agent; the reward node's agent port is not fixed, so look at
    # every node's metrics port Ray reports
    ports = {n["MetricsExportPort"] for n in ray.nodes() if n["Alive"]}
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline and "ray_crucible_reward_samples" not in text:
        text = ""
        for port in ports:
            try:
                text += urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                pass
        time.sleep(2)
    assert "ray_crucible_reward_samples" in text
