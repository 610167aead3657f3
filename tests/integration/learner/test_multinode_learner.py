"""The learner across nodes: two loopback Ray nodes stand in for two machines. FSDP2 ranks forced onto different
nodes (one CPU each, STRICT_SPREAD) rendezvous on rank 0's node and make the same update as the single-process
learner; a learner that cannot be placed is an error naming its fields, not a hang."""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")

from learner.cluster import LearnerGroup, free_port  # noqa: E402
from learner.config import RLVRConfig  # noqa: E402
from tests.integration.learner.test_backends import assert_same, batch, trained  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False, "redis_port": free_port()})
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        ray.init(address=cluster.address)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_fsdp2_ranks_on_two_nodes_match_the_single_process_update(two_nodes, tiny_policy):
    single, _ = trained(tiny_policy, {"backend": "local", "cpus_per_worker": 1}, micro_batch_size=3)
    spread, ranks = trained(tiny_policy, {"backend": "fsdp2", "world_size": 2, "cpus_per_worker": 1,
                                          "placement": "STRICT_SPREAD"}, micro_batch_size=3)
    assert len(set(ranks["nodes"])) == 2  # really on two nodes
    assert_same(single, spread, "fsdp2 across two nodes")


def test_an_unplaceable_learner_fails_fast_naming_its_fields(two_nodes, tiny_policy):
    cfg = RLVRConfig(model={"path": tiny_policy},
                     learner={"backend": "fsdp2", "world_size": 2, "cpus_per_worker": 1, "placement": "STRICT_PACK",
                              "placement_timeout_s": 3})
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"learner's 2 ranks .*learner.placement=STRICT_PACK.*placement_timeout_s"):
        LearnerGroup(tiny_policy, cfg)  # 2 CPUs on one node: no node has them
    assert time.monotonic() - t0 < 30


def test_a_learner_call_that_hangs_is_an_error_naming_the_stage(two_nodes, tiny_policy):
    from rollout.engine_group import StageTimeout

    cfg = RLVRConfig(model={"path": tiny_policy}, learner={"cpus_per_worker": 1}, run={"call_timeout_s": 0.01})
    group = LearnerGroup(tiny_policy, cfg)
    try:
        with pytest.raises(StageTimeout, match=r"learner ranks: train did not finish within 0.01s \(run.call_timeout_s\)"):
            group.update(batch(vocab=1000))  # a forward and backward take longer than 10 ms
    finally:
        group.close()
