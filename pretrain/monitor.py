"""What a pretraining run reports: per-step metrics to JSONL and TensorBoard (W&B optional), a console
progress bar on stderr, and alerts (loss spikes, MFU and compile-rate floors). Only rank 0 writes."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import warnings
from collections import deque
from pathlib import Path

import torch

# Dense bf16 Tensor Core peak TFLOP/s of one GPU without sparsity (half a datasheet's "with sparsity" figure).
# Ordered most specific first and matched as whole words, because plain substrings collide: "GB200" contains
# "B200", "GH200" contains "H200", "L40S"/"L40" contain "L4", "A100" contains "A10", and the H100/H200 NVL
# and PCIe cards are slower than the SXM parts whose names they extend. torch reports e.g.
# "NVIDIA H100 80GB HBM3" for an H100 SXM, "NVIDIA A100-SXM4-80GB", "NVIDIA GH200 480GB". Sources:
#   Hopper: NVIDIA H100 Tensor Core GPU Architecture whitepaper (SXM5 989.4 / 1978.9, PCIe 756 / 1513) and
#     the H100 datasheet (NVL 1,671 sparse); H200 datasheet (SXM 1,979, NVL 1,671 sparse); GH200 datasheet
#     (1,979 sparse).
#   Blackwell: HGX B200 datasheet (4.5 PFLOPS sparse per GPU); GB200 NVL72 datasheet (360 PFLOPS sparse
#     over 72 GPUs).
#   Ada: L40S datasheet (362.05 / 733), L40 datasheet (181.05 / 362.1), L4 datasheet (242 sparse);
#     Ada Lovelace architecture whitepaper, RTX 4090 (165.2 with FP32 accumulate).
#   Ampere: A100 datasheet (312 / 624; A800 is the same die); A10 datasheet (125 / 250). The A10G is AWS's
#     A10 variant with no public NVIDIA datasheet: 125 is the A10 figure; set train.peak_tflops to override.
GPU_PEAK_TFLOPS: tuple[tuple[str, float, str], ...] = (
    (r"\bGB200\b", 2500.0, "GB200"),
    (r"\bB200\b", 2250.0, "B200"),
    (r"\bGH200\b", 989.4, "GH200"),
    (r"\bH200\b.*\bNVL\b", 835.5, "H200 NVL"),
    (r"\bH200\b", 989.4, "H200 SXM"),
    (r"\bH100\b.*\bNVL\b", 835.5, "H100 NVL"),
    (r"\bH100\b.*\bPCIe\b", 756.0, "H100 PCIe"),
    (r"\bH100\b", 989.4, "H100 SXM"),
    (r"\bH800\b", 989.4, "H800 SXM"),
    (r"\bL40S\b", 362.05, "L40S"),
    (r"\bL40\b", 181.05, "L40"),
    (r"\bL4\b", 121.0, "L4"),
    (r"\bRTX 4090\b", 165.2, "RTX 4090"),
    (r"\bA100\b", 312.0, "A100"),
    (r"\bA800\b", 312.0, "A800"),
    (r"\bA10G\b", 125.0, "A10G"),
    (r"\bA10\b", 125.0, "A10"),
)
CPU_TFLOPS_PER_CORE = 0.1  # a rough fp32 AVX2/AVX-512 figure; MFU on CPU is indicative only


def gpu_peak_tflops(name: str) -> tuple[float, str] | None:
    """(dense bf16 peak TFLOP/s, which GPU it was read as) for a torch device name, or None when the GPU is
    not in the table. The first pattern that matches wins, so a product is never read as one whose name it
    contains (GB200 as B200, L40S as L4, H100 NVL as H100 SXM)."""
    for pattern, tflops, label in GPU_PEAK_TFLOPS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return tflops, label
    return None


def device_peak_tflops(configured: float | None) -> tuple[float, str]:
    """(peak TFLOP/s of one device, where the number came from). Unknown GPUs give 0.0 (MFU then reads 0)
    rather than a guess."""
    if configured:
        return configured, "config"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        found = gpu_peak_tflops(name)
        if found is None:
            return 0.0, f"{name} (unknown peak: set train.peak_tflops)"
        tflops, label = found
        return tflops, f"{name} (read as {label}: dense bf16 datasheet peak)"
    cores = len(os.sched_getaffinity(0))
    return CPU_TFLOPS_PER_CORE * cores, f"cpu x{cores} (assumed {CPU_TFLOPS_PER_CORE} TFLOP/s per core)"


def mfu(flops_per_token: float, tokens_per_s_per_device: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: the model FLOP/s one device achieves over that device's peak. It takes one
    device's tokens/s (global tokens/s / world size), so the same formula holds at any scale; 0.0 when the
    peak is unknown (0), so an unlisted GPU reads as "no MFU" rather than an inflated one."""
    if peak_tflops <= 0:
        return 0.0
    return flops_per_token * tokens_per_s_per_device / (peak_tflops * 1e12)


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


def progress_line(step: int, total: int, start: int, elapsed_s: float, metrics: dict) -> str:
    """`pretrain step 40/600 | loss 3.214 | val_bpb 1.872 | 41230 tok/s | ETA 4m12s` (what a log file shows)."""
    parts = [f"pretrain step {step}/{total}", f"loss {metrics['train/loss']:.3f}"]
    if "val/bpb" in metrics:
        parts.append(f"val_bpb {metrics['val/bpb']:.3f}")
    if metrics.get("perf/tokens_per_s"):
        parts.append(f"{metrics['perf/tokens_per_s']:.0f} tok/s")
    done = step - start
    if done > 0 and step < total:
        eta = elapsed_s / done * (total - step)
        parts.append(f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")
    return " | ".join(parts)


class Monitor:
    def __init__(self, out_dir: Path, total_steps: int, start_step: int, enabled: bool, tensorboard: bool,
                 wandb_project: str | None, config: dict, progress_every: int = 0) -> None:
        self.enabled = enabled
        self.jsonl = out_dir / "metrics.jsonl"
        self.tb = self.wandb = self.progress = None
        # Not a terminal (a log file, a Ray job, CI): tqdm stays quiet, so a plain line every ~5 % of the run.
        self.total, self.start_step, self.t0 = total_steps, start_step, time.monotonic()
        self.line_every = progress_every or max(1, (total_steps - start_step) // 20)
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
        if self.progress is not None and self.progress.disable and "train/loss" in metrics and (
                step % self.line_every == 0 or step == self.total):
            print(progress_line(step, self.total, self.start_step, time.monotonic() - self.t0, metrics),
                  file=sys.stderr, flush=True)
        elif self.progress is not None and "train/loss" in metrics:
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
