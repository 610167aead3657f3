"""Trainer-level cases shared by tests/gpu (CUDA, NCCL) and the CPU integration tests (gloo): they need a
tokenizer and shards, taken from `make gpu-check-prepare`'s folder when it exists, else built by the CLI."""

from __future__ import annotations

from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
PREPARED = REPO / ".gpu-check" / "pretrain"
SMALL = ["model.hidden_size=64", "model.num_layers=2", "model.num_heads=4", "model.num_kv_heads=2",
         "model.head_dim=16", "model.intermediate_size=96", "model.context=256", "data.seq_len=128",
         "data.micro_batch_size=4", "eval.compile_prompts=0", "eval.fim_examples=1", "eval.val_windows=4",
         "tensorboard=false"]


def data_dir(tmp_path: Path) -> Path:
    """A directory with `tokenizer/` and `shards/`."""
    if (PREPARED / "shards" / "val" / "meta.json").exists():
        return PREPARED
    from tests.integration.pretrain.conftest import FAST, PRESET, run_pretrain

    out = tmp_path / "data"
    proc, _ = run_pretrain(["shards", "--config", str(PRESET), f"out_dir={out}", *FAST])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def trainer_config(run_dir: Path, data: Path, *overrides: str):
    from configs.loader import load_config
    from pretrain.config import PretrainConfig

    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer", "shards"):
        if not (run_dir / name).exists():
            (run_dir / name).symlink_to(data / name)
    preset = REPO / "configs" / "pretrain" / "tiny-cpu.yaml"
    return load_config(PretrainConfig, preset, [f"out_dir={run_dir}", *SMALL, *overrides])


def collective_devices(tmp_path: Path, monkeypatch, device: str, data: Path | None = None) -> list[str]:
    """Device type of every tensor the trainer hands to `all_reduce` in one FSDP2 step of a MoE model (token
    and loss counters, router loads), the isolation probe and the evaluations (BPB sums)."""
    import torch.distributed as dist

    from pretrain.train import Trainer

    seen: list[str] = []
    original = dist.all_reduce

    def spy(tensor, *args, **kwargs):
        seen.append(tensor.device.type)
        return original(tensor, *args, **kwargs)

    dtype = "bfloat16" if device == "cuda" else "float32"
    cfg = trainer_config(tmp_path / "run", data or data_dir(tmp_path), "train.parallel=fsdp2", f"train.dtype={dtype}",
                         "model.arch=moe", "model.moe={num_experts: 4, experts_per_token: 2, "
                         "expert_intermediate_size: 32}")
    # A world of one on loopback, set through monkeypatch and undone on return: the trainer would otherwise leave
    # RANK/MASTER_PORT in this process's environment, and every later subprocess (the CLIs, accelerate) would
    # try to join that dead group.
    from torch.distributed.elastic.utils.distributed import get_free_port

    with monkeypatch.context() as patch:
        patch.setattr(dist, "all_reduce", spy)
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                           ("MASTER_PORT", str(get_free_port()))):
            patch.setenv(key, value)
        try:
            trainer = Trainer(cfg)
            assert trainer.device.type == device
            trainer.check_isolation()
            trainer.train_step()
            trainer.run_evals()
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    return seen
