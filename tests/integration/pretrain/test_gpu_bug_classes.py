"""Trainer-level GPU bug classes of issue 17 on the CPU (gloo), with the tiny preset's data: what every collective
receives, a NaN or spike never costing the last good checkpoint, and the pretraining isolation probe refusing
to train when packed documents mix. tests/gpu runs the collective case on NCCL."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain import checkpoint
from pretrain.isolation import DocumentLeakError
from tests.gpu.trainer_cases import collective_devices, trainer_config


def test_every_collective_gets_a_tensor_on_the_training_device(tiny_data, tmp_path, monkeypatch):
    """Token/loss counters, MoE router loads, the probe's verdict and the BPB sums: all on `trainer.device`.
    (On this machine that device is the CPU, so this pins the plumbing; tests/gpu checks the same on NCCL,
    which has no CPU tensors.)"""
    import os

    before = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    devices = collective_devices(tmp_path, monkeypatch, "cpu", data=tiny_data)
    assert {k: os.environ.get(k) for k in before} == before  # no process-group env left for later subprocesses
    assert len(devices) >= 6  # targets, loss, router loads, probe verdict, 3 BPB sums
    assert set(devices) == {"cpu"}


def test_a_nan_never_costs_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    """Good steps 1-2 (checkpointed), then the loss turns NaN: no optimizer step, no checkpoint written, the
    weights and the good checkpoint survive; spikes afterwards are saved as suspect and rotate out before it."""
    import pretrain.train as train_module
    from pretrain.train import Trainer

    cfg = trainer_config(tmp_path / "run", tiny_data, "train.steps=8", "checkpoint.every=2", "checkpoint.keep=1",
                         "eval.every=100", "alerts.spike_window=2", "alerts.spike_factor=1.5",
                         "train.isolation_probe=false")
    real = train_module.token_losses
    step_no = {"n": 0}

    def losses(model, forward, inputs, labels):
        out = real(model, forward, inputs, labels)
        n = step_no["n"]
        if n in (3, 4):
            return out * float("nan")
        if n >= 5:
            return out * 10.0  # spikes: saved, but as suspect
        return out

    monkeypatch.setattr(train_module, "token_losses", losses)
    trainer = Trainer(cfg)
    original_step = trainer.train_step
    weights = {}

    def counted_step():
        step_no["n"] += 1
        if step_no["n"] in (3, 5):  # before the NaN steps, and after them
            weights[step_no["n"]] = [p.detach().clone() for p in trainer.model.parameters()]
        return original_step()

    trainer.train_step = counted_step
    saved = {}
    original_save = trainer.save

    def save(loss=None, suspect=False):
        saved[trainer.step] = suspect
        return original_save(loss, suspect)

    trainer.save = save
    summary = trainer.fit()
    assert 3 not in saved and 4 not in saved  # the NaN steps wrote nothing
    assert saved[2] is False and any(saved[s] for s in saved if s > 4)  # spikes after them: suspect saves
    good = checkpoint.last_good(cfg.out_dir / "checkpoints")
    assert good is not None and good.name == "step-0000002"  # pinned although keep=1 and later saves exist
    assert sum("optimizer step was skipped" in a for a in summary["alerts"]) == 2
    assert all(torch.equal(a, b) for a, b in zip(weights[3], weights[5]))  # NaN steps never reached the weights
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_training_refuses_packed_documents_that_mix(tiny_data, tmp_path, monkeypatch):
    """The run-time probe on the real batch shape: position ids that run on across documents (what an attention
    path that ignores them amounts to) stop the run before the first step."""
    import pretrain.train as train_module
    from pretrain.train import Trainer

    real = train_module.packed_model_inputs

    def running_positions(model, input_ids, position_ids):
        return real(model, input_ids, torch.arange(position_ids.shape[1]).expand_as(position_ids).contiguous())

    monkeypatch.setattr(train_module, "packed_model_inputs", running_positions)
    trainer = Trainer(trainer_config(tmp_path / "run", tiny_data, "train.steps=2"))
    with pytest.raises(DocumentLeakError, match="attend to each other"):
        trainer.fit()
    assert trainer.step == 0


def test_a_non_finite_gradient_skips_the_step(tiny_data, tmp_path, monkeypatch):
    """A finite loss can still come with an inf/NaN gradient norm (the norm is global, so every rank agrees):
    that step is skipped too, and the weights stay as they were."""
    import pretrain.train as train_module
    from pretrain.train import Trainer

    real = train_module.clip_grad_norm
    calls = {"n": 0}

    def clip(params, max_norm):
        calls["n"] += 1
        norm = real(params, max_norm)
        return float("inf") if calls["n"] == 2 else norm

    monkeypatch.setattr(train_module, "clip_grad_norm", clip)
    trainer = Trainer(trainer_config(tmp_path / "run", tiny_data, "train.steps=3", "train.isolation_probe=false"))
    trainer.train_step()
    before = [p.detach().clone() for p in trainer.model.parameters()]
    skipped = trainer.train_step()
    assert skipped["train/step_skipped"] == 1 and math.isfinite(skipped["train/loss"])
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert trainer.train_step()["train/step_skipped"] == 0
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
