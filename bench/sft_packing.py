"""SFT throughput: padding-free best-fit packing vs the padded baseline, same data, model and step count.

Both runs train the tiny-cpu preset's scratch model (full fine-tune) for `--steps` optimizer steps of
`--micro-batch` sequences. Reported per run: trained (completion) tokens per second, the share of computed
positions that are padding, and the eval loss reached. Packing fills each row up to `--max-length` with whole
samples; the baseline pads each batch to its longest sample.

    .venv/bin/python bench/sft_packing.py [--steps 60] [--max-length 512]

Data and the scratch base come from the tiny-cpu preset (built under runs/bench-sft if missing).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox_throughput import save_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PRESET = REPO / "configs" / "sft" / "tiny-cpu.yaml"


def prepare(out_dir: Path) -> None:
    if not (out_dir / "base" / "config.json").exists():
        subprocess.run([sys.executable, "-m", "sft", "train", "--config", str(PRESET), f"out_dir={out_dir}",
                        "train.max_steps=1", "logging.tensorboard=false"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)


def run(out_dir: Path, packing: bool, steps: int, max_length: int, micro_batch: int) -> dict:
    import torch

    from configs.loader import load_config
    from sft.config import SFTConfig
    from sft.train import build_trainer, read_records

    cfg = load_config(SFTConfig, PRESET, [
        f"out_dir={out_dir}", f"train.packing={packing}", f"train.max_steps={steps}",
        f"train.max_length={max_length}", f"train.micro_batch_size={micro_batch}", "logging.tensorboard=false",
        f"eval.every={steps}", "eval.max_samples=64", f"checkpoint.every={10 * steps}", "train.resume=false"])
    cfg.out_dir = out_dir / ("packed" if packing else "padded")
    train = read_records(out_dir / "data" / "train.chat.jsonl", "chat")
    evals = read_records(out_dir / "data" / "eval.chat.jsonl", "chat", 64)
    torch.manual_seed(0)
    trainer, _ = build_trainer(cfg, str(out_dir / "base"), train, evals)
    positions = real = trained = 0
    for step, batch in enumerate(trainer.get_train_dataloader()):  # what the timed run computes (same seed)
        if step == steps:
            break
        positions += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        trained += int((batch["labels"] != -100).sum())
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    eval_loss = trainer.evaluate()["eval_loss"]
    return {"packing": packing, "steps": steps, "seconds": round(seconds, 2),
            "trained_tokens": trained, "trained_tokens_per_s": round(trained / seconds, 1),
            "padding_share": round(1 - real / positions, 4), "eval_loss": round(eval_loss, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--out", default="bench/results/sft_packing.json")
    args = parser.parse_args()
    out_dir = REPO / "runs" / "bench-sft"
    prepare(out_dir)
    packed = run(out_dir, True, args.steps, args.max_length, args.micro_batch)
    padded = run(out_dir, False, args.steps, args.max_length, args.micro_batch)
    report = {"machine": platform.processor() or platform.machine(), "packed": packed, "padded": padded,
              "speedup_trained_tokens_per_s": round(packed["trained_tokens_per_s"] / padded["trained_tokens_per_s"], 2)}
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
