"""What a pretraining run reports: per-step metrics to JSONL and TensorBoard (W&B optional), a console
progress bar on stderr, and alerts (loss spikes, MFU and compile-rate floors). Only rank 0 writes."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections import deque
from pathlib import Path

import torch

# Dense bf16 peak FLOP/s of common training GPUs (vendor datasheets, without sparsity).
GPU_PEAK_TFLOPS = {"H200": 989.5, "H100": 989.5, "H800": 989.5, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
                   "A10G": 125.0, "L4": 121.0, "RTX 4090": 165.2, "B200": 2250.0, "GB200": 2500.0}
CPU_TFLOPS_PER_CORE = 0.1  # a rough fp32 AVX2/AVX-512 figure; MFU on CPU is indicative only


def device_peak_tflops(configured: float | None) -> tuple[float, str]:
    """(peak TFLOP/s of one device, where the number came from)."""
    if configured:
        return configured, "config"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops, name
        return 0.0, f"{name} (unknown peak: set train.peak_tflops)"
    cores = len(os.sched_getaffinity(0))
    return CPU_TFLOPS_PER_CORE * cores, f"cpu x{cores} (assumed {CPU_TFLOPS_PER_CORE} TFLOP/s per core)"


def peak_memory_gib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class LossSpikeDetector:
    """Flags a loss above `factor` x the mean of the last `window` losses (needs half a window of history)."""

    def __init__(self, factor: float, window: int) -> None:
        self.factor = factor
        self.history: deque[float] = deque(maxlen=window)

    def update(self, loss: float) -> bool:
        if not math.isfinite(loss):  # NaN/inf is always an alert, and never enters the baseline
            return True
        full_enough = len(self.history) >= max(2, self.history.maxlen // 2)
        spike = full_enough and loss > self.factor * (sum(self.history) / len(self.history))
        if not spike:  # a spike does not raise the baseline it is judged against
            self.history.append(loss)
        return spike

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history.extend(state["history"])


class Monitor:
    def __init__(self, out_dir: Path, total_steps: int, start_step: int, enabled: bool, tensorboard: bool,
                 wandb_project: str | None, config: dict) -> None:
        self.enabled = enabled
        self.jsonl = out_dir / "metrics.jsonl"
        self.tb = self.wandb = self.progress = None
        if not enabled:
            return
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        if wandb_project:
            import wandb

            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(out_dir))
        from tqdm import tqdm

        self.progress = tqdm(total=total_steps, initial=start_step, desc="pretrain", file=sys.stderr,
                             dynamic_ncols=True, disable=None)

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")
        for key, value in metrics.items():
            if self.tb and isinstance(value, (int, float)):
                self.tb.add_scalar(key, value, step)
        if self.wandb:
            self.wandb.log(metrics, step=step)
        if self.progress is not None and "train/loss" in metrics:
            self.progress.n = step
            self.progress.set_postfix(loss=f"{metrics['train/loss']:.3f}",
                                      tok_s=f"{metrics.get('perf/tokens_per_s', 0):.0f}", refresh=False)
            self.progress.refresh()

    def warn(self, message: str) -> None:
        if self.enabled:
            warnings.warn(message, stacklevel=2)
            print(f"[alert] {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tb:
            self.tb.close()
        if self.progress is not None:
            self.progress.close()
        if self.wandb:
            self.wandb.finish()
