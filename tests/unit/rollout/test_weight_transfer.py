"""The weight transfer's wire format and group on real gloo, in one process (a sender thread and receiver
threads): every tensor arrives bit-exact whatever the bucket size (smaller than the largest tensor, not a
divisor of any size, larger than the model), digests agree, and a layout that does not match what is sent
fails loudly instead of loading shifted bytes."""

from __future__ import annotations

import threading

import pytest
import torch

from rollout.weight_transfer import (Address, Digest, Layout, ParamMeta, join, open_store, receive, send,
                                     state_to_blobs)


def state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"embed.weight": torch.randn(50, 8, generator=g).to(torch.bfloat16),
            "empty": torch.zeros(0, 4, dtype=torch.bfloat16),
            "layers.0.q.weight": torch.randn(8, 8, generator=g).to(torch.bfloat16),
            "layers.0.q.bias": torch.randn(8, generator=g).to(torch.bfloat16),
            "positions": torch.arange(7, dtype=torch.int64)}


def layout_of(s: dict, bucket: int) -> Layout:
    return Layout(tuple(ParamMeta(n, "int64" if not v.is_floating_point() else "bfloat16", tuple(v.shape))
                        for n, v in s.items()), bucket)


def transfer(s: dict, layout: Layout, receivers: int = 2, items=None):
    store, port = open_store("127.0.0.1", receivers + 1, timeout_s=30)
    address = Address("127.0.0.1", port, receivers + 1, "gloo", 30)
    got, digests, errors = [None] * receivers, [None] * receivers, []

    def receiver(i: int) -> None:
        try:
            pg = join(address, 1 + i)
            d = Digest()
            got[i] = {n: t.clone() for n, t in receive(pg, layout, torch.device("cpu"), d)}
            digests[i] = d.hexdigest()
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=receiver, args=(i,)) for i in range(receivers)]
    for t in threads:
        t.start()
    pg = join(address, 0, store)
    try:
        sent = send(pg, items if items is not None else s.items(), layout, torch.device("cpu"))
    finally:
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    return sent, got, digests


@pytest.mark.parametrize("bucket", [100, 7, 1 << 20])  # < the 800-byte embedding, odd, > the whole model
def test_every_tensor_arrives_bit_exact_in_any_bucket_size(bucket):
    s = state()
    layout = layout_of(s, bucket)
    assert (bucket < max(p.nbytes for p in layout.params)) == (bucket < 800)
    sent, got, digests = transfer(s, layout)
    for received in got:
        assert list(received) == list(s)
        for name, value in s.items():
            assert received[name].dtype == value.dtype and torch.equal(received[name], value), name
    assert digests == [sent, sent]


def test_the_layout_survives_the_rpc_as_plain_data():
    layout = layout_of(state(), 64)
    assert Layout.from_wire(layout.to_wire()) == layout
    assert layout.buckets == -(-layout.total_bytes // 64) and layout.bucket_size(layout.buckets - 1) > 0


def test_a_source_that_disagrees_with_the_layout_fails_loudly():
    s = state()
    layout = layout_of(s, 64)
    swapped = list(s.items())
    swapped[0], swapped[2] = swapped[2], swapped[0]
    store, port = open_store("127.0.0.1", 1, timeout_s=5)
    pg = join(Address("127.0.0.1", port, 1, "gloo", 5), 0, store)  # a group of one: nothing to wait for
    with pytest.raises(RuntimeError, match="layers.0.q.weight.*where the layout has embed.weight"):
        send(pg, iter(swapped), layout, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="source ran out early"):
        send(pg, iter(list(s.items())[:-1]), layout, torch.device("cpu"))


def test_blobs_stay_below_the_limit_and_keep_every_tensor():
    from safetensors.torch import load

    s = {f"w{i}": torch.ones(256) * i for i in range(10)}  # 1 KiB each
    blobs = state_to_blobs(s, max_bytes=3000)
    assert len(blobs) == 5  # two 1 KiB tensors per blob: a third would pass 3000 bytes
    assert all(len(b) < 3000 + 512 for b in blobs)  # payload + the JSON header
    merged = {k: v for b in blobs for k, v in load(b).items()}
    assert merged.keys() == s.keys() and all(torch.equal(merged[k], s[k]) for k in s)


def test_tensor_parallel_engines_get_one_rank_per_shard():
    """2 engines x TP 2: the learner's group has 4 receivers, engine i's shards start at rank 1 + 2i (each shard's
    worker adds its own TP rank), and an engine only counts as loaded when its digest matches the learner's."""
    from rollout.config import RolloutConfig
    from rollout.engine_group import BusSource, LocalCalls

    calls_seen = []

    class Engine:
        def __init__(self, digest):
            self.digest = digest

        def receive_weights(self, address, first_rank, layout):
            calls_seen.append((address["world"], first_rank))
            return self.digest

        def set_version(self, version):
            self.version = version

    class Learners:
        def stream(self, receivers, layout, start_receivers, timeout_s):
            start_receivers(Address("h", 1, receivers + 1, "gloo", timeout_s))
            return "d1", 7

    source = BusSource(Learners(), layout_of(state(), 64), 5, workers_per_engine=2)
    good, bad = Engine("d1"), Engine("other")
    outcomes, version = source.deliver([good, bad], LocalCalls())
    assert calls_seen == [(5, 1), (5, 3)] and version == 7 and good.version == 7
    assert outcomes[0] is None and "digest" in str(outcomes[1]) and not hasattr(bad, "version")
    with pytest.raises(ValueError, match="tensor_parallel_size=2 needs gpus_per_engine=2"):
        RolloutConfig(tensor_parallel_size=2, gpus_per_engine=1)


def test_an_engine_that_dies_during_a_push_is_replaced_out_of_sight_until_it_holds_the_weights():
    """The replacement must not serve (generate) with the starting weights: it joins the group only after the
    retried transfer reached it."""
    from rollout.engine_group import BusSource, EngineDied, EngineGroup, LocalCalls
    from tests.unit.rollout.fakes import FakeEngine, FakeLearners

    log: list = []
    spawned: list = []

    class DiesOnReceive(FakeEngine):
        def receive_weights(self, address, first_rank, layout):
            raise EngineDied("killed mid-transfer")

    class Watched(FakeEngine):
        def receive_weights(self, address, first_rank, layout):
            seen.append(self in group.engines)  # visible to generate already?
            return super().receive_weights(address, first_rank, layout)

    seen: list = []

    def spawn():
        engine = (DiesOnReceive if len(spawned) == 1 else Watched)(log)
        spawned.append(engine)
        return engine

    group = EngineGroup(spawn, 2, LocalCalls())
    learners = FakeLearners()
    learners.weight, learners.version = 0.5, 3
    pushed = group.push(BusSource(learners, learners.layout(64), 5))
    replacement = spawned[-1]
    assert pushed["version"] == 3 and group.restarts == 1 and len(spawned) == 3
    assert group.engines == [spawned[0], replacement] and replacement.weight == 0.5 and replacement.version == 3
    assert seen == [True, True, False]  # engine 0 on both attempts; the replacement while still private
