"""The learner at the GPU recipe's numbers, on CPU: bf16 compute over fp32 master weights must still move the
weights at lr 5e-7 (bf16-stored weights do not: an Adam step is ~1e-3 of their ulp), and activation
checkpointing must hold less for backward while making the same update. One plain local-backend worker, no Ray."""

from __future__ import annotations

import random

import pytest
import torch

from learner.batch import shard
from learner.config import RLVRConfig
from rollout.types import TrainingSample
from tests.unit.learner.test_logprobs import saved_bytes


def batch(vocab: int = 1000) -> list[TrainingSample]:
    rng = random.Random(11)
    out = []
    for i in range(8):
        p, c = rng.randint(4, 12), rng.randint(4, 16)
        out.append(TrainingSample(tuple(rng.randrange(vocab) for _ in range(p)),
                                  tuple(rng.randrange(vocab) for _ in range(c)),
                                  tuple(-rng.uniform(0.5, 3.0) for _ in range(c)), (-1.0) ** i * (1 + i / 8)))
    return out


def worker(policy: str, **learner):
    from learner.worker import LearnerWorker

    cfg = RLVRConfig(model={"path": policy, "dtype": "bfloat16"},
                     algo={"lr": 5e-7, "micro_batch_size": 4, "grad_clip": 1e9},
                     rollout={"temperature": 0.8}, learner={"cpus_per_worker": 1, **learner})
    return LearnerWorker(cfg, policy, rank=0, world_size=1, master_port=0)


def train(w, steps: int) -> None:
    per_rank, tokens, micro = shard(batch(), 1, w.cfg.algo.micro_batch_size, 1)
    for _ in range(steps):
        w.train(per_rank[0], tokens, micro)


def fraction_changed(before: dict, after: dict) -> float:
    changed = sum(int((after[k] != before[k]).sum()) for k in before)
    return changed / sum(v.numel() for v in before.values())


def test_bf16_compute_with_fp32_masters_moves_the_weights_at_lr_5e7(tiny_policy):
    w = worker(tiny_policy)
    assert all(p.dtype == torch.float32 for p in w.model.parameters())  # the masters
    before = w.export_state()
    train(w, 10)
    assert fraction_changed(before, w.export_state()) > 0.9


def test_bf16_stored_weights_would_not_move(tiny_policy, monkeypatch):
    """The failure the masters prevent (what gpu-8x did before): weights stored in bf16 barely change."""
    import learner.worker as lw

    monkeypatch.setattr(lw, "policy_load_dtype", lambda compute, backend: compute)
    w = worker(tiny_policy)
    assert all(p.dtype == torch.bfloat16 for p in w.model.parameters())
    before = w.export_state()
    train(w, 10)
    assert fraction_changed(before, w.export_state()) < 0.1


def test_activation_checkpointing_holds_less_and_makes_the_same_update(tiny_policy):
    plain, ac = worker(tiny_policy), worker(tiny_policy, activation_checkpointing=True)
    held = {}
    for name, w in (("plain", plain), ("ac", ac)):
        w.model.train()  # HF checkpoints only in training mode
        mb = w._micro_batches(batch(), 1)[0]
        held[name] = saved_bytes(lambda: w._logprobs(mb, with_entropy=True)[0].sum())
    assert held["ac"] < 0.8 * held["plain"], held
    train(plain, 1)
    train(ac, 1)
    a, b = plain.export_state(), ac.export_state()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    assert fraction_changed(worker(tiny_policy).export_state(), a) > 0.5  # the step did move the weights


def test_lr_warmup_scales_the_first_steps_and_survives_a_resume(tiny_policy, tmp_path):
    from learner.worker import LearnerWorker

    def make(warmup: int):
        cfg = RLVRConfig(model={"path": tiny_policy}, algo={"lr": 1e-3, "micro_batch_size": 8, "warmup_steps": warmup},
                         learner={"cpus_per_worker": 1})
        return LearnerWorker(cfg, tiny_policy, rank=0, world_size=1, master_port=0)

    def first_step_size(w) -> float:
        before = w.export_state()
        train(w, 1)
        after = w.export_state()
        return max(float((after[k] - before[k]).abs().max()) for k in before)

    # Adam's first step moves each weight by ~lr: 1e-3 without warmup, 1e-3 / 4 with 4 warmup steps
    full, warm = first_step_size(make(0)), first_step_size(make(4))
    assert full == pytest.approx(1e-3, rel=0.05) and warm == pytest.approx(0.25e-3, rel=0.05)
    w = make(4)
    train(w, 2)
    assert w.opt.param_groups[0]["lr"] == pytest.approx(0.5e-3)  # steps 0 and 1 ran at 1/4 and 2/4
    w.save(str(tmp_path / "ckpt"))
    resumed = make(4)
    resumed.load(str(tmp_path / "ckpt"))
    train(resumed, 1)
    assert resumed.opt.param_groups[0]["lr"] == pytest.approx(0.75e-3)  # the warmup clock was checkpointed
