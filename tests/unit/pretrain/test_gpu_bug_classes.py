"""Issue 17's GPU bug classes, pinned where a CPU can see them (the same cases run on CUDA in tests/gpu):
packed-document isolation per attention implementation with batch > 1 (and a probe that catches a leak),
flash varlen boundaries, training mode and activation checkpointing when starting from a checkpoint, chunked
cross-entropy equal to the full one, fp32 masters under bf16 compute, and the pure decisions behind them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pretrain.isolation import DocumentLeakError, IsolationReport, leak_threshold, require_isolation, victim_mask
from pretrain.loss import ChunkedLossHead, chunked_token_losses, install_chunked_head, token_losses
from pretrain.model import cu_seqlens, packed_model_inputs
from tests.gpu import cases

ATTENTION = ["sdpa", "eager", "flex_attention"]


# --- isolation of packed documents --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("attn", ATTENTION)
def test_packed_documents_stay_apart_in_a_batch_of_windows(attn, dtype):
    report = cases.isolation_report("cpu", attn, dtype)
    assert report is not None and report.isolated, report
    assert report.leak <= report.threshold and report.signal > 0.1
    assert report.batch_shape == (4, 64)


@pytest.mark.parametrize("attn", ATTENTION)
def test_the_probe_refuses_documents_that_attend_to_each_other(attn):
    report = cases.isolation_report("cpu", attn, torch.bfloat16, leaky=True)
    assert report is not None and not report.isolated
    assert report.leak > 10 * report.threshold  # not a near miss: mixing documents moves log-probs a lot
    with pytest.raises(DocumentLeakError, match=attn):
        require_isolation(report)


def test_moe_and_sinks_keep_documents_apart():
    for arch, attn in (("moe", "sdpa"), ("sinks", "eager")):
        report = cases.isolation_report("cpu", attn, torch.float32, arch=arch)
        assert report is not None and report.isolated, (arch, report)


def test_leak_threshold_by_hand():
    assert leak_threshold(signal=2.0, noise=0.0) == pytest.approx(2e-3)
    assert leak_threshold(signal=2.0, noise=0.01) == pytest.approx(0.04)  # 4 x the repeat-forward noise
    report = IsolationReport(0.5, 2.0, 0.0, 0.002, False, "sdpa", (2, 8))
    with pytest.raises(DocumentLeakError, match="micro-batches of 2 x 8"):
        require_isolation(report)
    require_isolation(None)  # a single-document batch has nothing to leak into


def test_victim_is_the_first_document_of_the_first_row():
    pos = torch.tensor([[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]])
    assert victim_mask(pos).tolist() == [[True, True, True, False, False], [False] * 5]


# --- flash-attention varlen -------------------------------------------------------------------------------
def test_cu_seqlens_of_a_batch_by_hand():
    pos = torch.tensor([[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]])  # documents of 3, 2 | 2, 3 tokens
    cu, longest = cu_seqlens(pos)
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 5, 7, 10] and longest == 3


def test_cu_seqlens_refuses_a_window_that_does_not_start_a_document():
    with pytest.raises(ValueError, match="start a document"):
        cu_seqlens(torch.tensor([[3, 4, 0, 1]]))


def test_flash_inputs_are_one_row_with_per_batch_boundaries():
    """transformers derives flash varlen boundaries from position ids only for a batch of one: the trainer
    flattens the micro-batch and passes cu_seqlens itself, so windows never attend across rows."""
    model = cases.tiny_model("cpu")
    batch = cases.packed_batch(rows=3, length=16)
    model.config._attn_implementation = "flash_attention_2"  # inputs only: no flash kernel on this machine
    got = packed_model_inputs(model, batch["input_ids"], batch["position_ids"])
    assert got["input_ids"].shape == (1, 48) and got["position_ids"].shape == (1, 48)
    cu, longest = cu_seqlens(batch["position_ids"])
    assert torch.equal(got["cu_seq_lens_q"], cu) and torch.equal(got["cu_seq_lens_k"], cu)
    assert got["max_length_q"] == got["max_length_k"] == longest
    assert all(int(b) in cu.tolist() for b in (0, 16, 32, 48))  # every window boundary is a document boundary


# --- starting from a checkpoint ---------------------------------------------------------------------------
def test_a_run_from_a_checkpoint_trains_and_checkpoints_activations(tmp_path):
    """from_pretrained returns eval mode, and HF checkpoints activations only while training: the trainer must
    switch it back, or activation checkpointing silently does nothing (2 = forward + recompute in backward)."""
    got = cases.checkpointing_from_checkpoint("cpu", tmp_path)
    assert got == {"training": True, "gradient_checkpointing": True, "layer_forwards": 2}


# --- chunked cross-entropy -------------------------------------------------------------------------------
def test_chunked_losses_and_gradients_equal_the_full_ones():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (37,), generator=g)
    labels[[0, 5, 36]] = -100
    full = F.cross_entropy(hidden @ weight.T, labels, ignore_index=-100, reduction="none")
    chunked = chunked_token_losses(hidden, weight, labels, chunk=8)  # 5 chunks, the last one short
    torch.testing.assert_close(chunked, full)
    gh, gw = torch.autograd.grad(full.sum(), (hidden, weight))
    ch, cw = torch.autograd.grad(chunked.sum(), (hidden, weight))
    torch.testing.assert_close(ch, gh)
    torch.testing.assert_close(cw, gw)
    assert chunked[[0, 5, 36]].eq(0).all()


def test_the_chunked_head_gives_the_models_own_losses():
    model = cases.tiny_model("cpu")
    batch = cases.packed_batch(rows=2, length=32)
    labels = batch["input_ids"].roll(-1, dims=1)
    labels[:, -1] = -100
    inputs = packed_model_inputs(model, batch["input_ids"], batch["position_ids"])
    plain = token_losses(model, model, inputs, labels)
    name = [n for n, p in model.named_parameters() if p is model.get_output_embeddings().weight][0]
    install_chunked_head(model, chunk=24)
    assert isinstance(model.get_output_embeddings(), ChunkedLossHead)
    assert name in dict(model.named_parameters())  # same parameter, same name: checkpoints are unchanged
    chunked = token_losses(model, model, inputs, labels)
    torch.testing.assert_close(chunked, plain)
    assert model(**inputs).logits.shape == (2, 32, cases.VOCAB)  # no labels set: ordinary logits (generation)


# --- fp32 masters under bf16 compute ------------------------------------------------------------------------
def test_learner_keeps_fp32_masters_under_bf16_compute(tmp_path):
    """At the GPU recipe's LR (5e-7) a bf16-stored weight does not move at all; the fp32 master does."""
    got = cases.fp32_master_update("cpu", tmp_path)
    assert got["dtypes"] == ["torch.float32"]
    assert got["matrix_moved"] > 0.99 and got["matrices_moved"] == got["matrices"]
    # the same step on bf16-stored weights: only values near 0 or next to a rounding edge move
    assert got["bf16_copy_moved"] < 0.05


def test_pure_dtype_and_backend_decisions():
    from configs.loader import load_config
    from learner.worker import policy_load_dtype
    from pretrain.config import PretrainConfig
    from pretrain.train import base_load_dtype, process_group_backend

    assert process_group_backend(cuda=True) == "cuda:nccl,cpu:gloo" and process_group_backend(cuda=False) == "gloo"
    assert policy_load_dtype("bfloat16", "local") == policy_load_dtype("bfloat16", "fsdp2") == "float32"
    assert policy_load_dtype("bfloat16", "deepspeed") == "bfloat16"
    assert policy_load_dtype("float32", "local") == "float32"
    lora = load_config(PretrainConfig, None, ["init.from_checkpoint=x", "init.lora_rank=8", "train.dtype=bfloat16"])
    full = load_config(PretrainConfig, None, ["init.from_checkpoint=x", "train.dtype=bfloat16"])
    assert base_load_dtype(lora) == torch.bfloat16 and base_load_dtype(full) == torch.float32


# --- presets ------------------------------------------------------------------------------------------------
def test_every_pretrain_preset_names_its_attention_implementation():
    """Chosen per preset, never by what happens to be importable (flash-attn's presence used to switch it)."""
    import yaml

    from pretrain.model import ModelConfig

    presets = sorted((cases.REPO / "configs" / "pretrain").glob("*.yaml"))
    assert len(presets) >= 7
    allowed = set(ModelConfig.model_fields["attn_implementation"].annotation.__args__[0].__args__)
    for path in presets:
        model = yaml.safe_load(path.read_text()).get("model", {})
        assert model.get("attn_implementation") in allowed, path.name


def test_sinks_with_sdpa_is_a_config_error():
    """Named early, at config time: gpt-oss has no SDPA attention in transformers."""
    from pydantic import ValidationError

    from pretrain.model import ModelConfig

    with pytest.raises(ValidationError, match="no SDPA path"):
        ModelConfig(arch="sinks", attn_implementation="sdpa")
    assert ModelConfig(arch="sinks").attn_implementation is None  # default: eager (attn_implementation())


def test_the_probe_runs_its_forwards_even_with_nothing_to_compare():
    """Under FSDP2 every rank must run the same forwards (each is a round of all-gathers): a rank whose batch
    holds a single document still runs all three, and reports None."""
    from pretrain.isolation import measure_isolation

    calls = []
    batch = {"input_ids": torch.arange(8)[None], "position_ids": torch.arange(8)[None],
             "labels": torch.arange(1, 9)[None]}
    report = measure_isolation(lambda b: calls.append(1) or torch.zeros(1, 8), batch, 300, "sdpa")
    assert report is None and len(calls) == 3


def test_the_probe_leaves_moe_router_loads_alone():
    """The probe runs in training mode without gradients: its forwards must not count as routed tokens, or the
    first bias update after every (re)start would differ and exact resume would break."""
    from pretrain.isolation import measure_isolation
    from pretrain.model import MoeBalancer

    model = cases.tiny_model("cpu", "sdpa", arch="moe")
    balancer = MoeBalancer(model, rate=0.01)
    batch = cases.packed_batch()
    inputs = packed_model_inputs(model, batch["input_ids"], batch["position_ids"])
    report = measure_isolation(lambda b: token_losses(model, model, packed_model_inputs(
        model, b["input_ids"], b["position_ids"]), b["labels"]), batch, cases.VOCAB, "sdpa")
    assert report is not None and report.isolated
    assert all(load.sum() == 0 for load in balancer.loads.values())
    model(**inputs).logits.sum().backward()  # a training forward does count
    assert all(load.sum() > 0 for load in balancer.loads.values())
