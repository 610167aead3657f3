"""Pretraining data and training throughput on this machine, each next to a baseline in the same run:

1. packing: our packer (documents joined with EOS, cut documents continue in the next window, FIM 50 %) vs
   the common "one document per window, crop or pad" baseline: share of window positions holding document
   tokens, and share of corpus tokens lost to cropping;
2. loader tokens/s: our packed loader with FIM 50 % and with FIM off (FIM re-tokenises the three pieces);
3. training tokens/s of the tiny-cpu preset: Muon + AdamW vs AdamW only, same data and model;
4. tokens per byte on the validation split: our BPE at three vocab sizes vs the reference tokenizers that ship
   inside packages here (scripts/fetch_reference_tokenizers.sh).

    .venv/bin/python bench/pretrain_throughput.py [--steps 60] [--seq-len 256]

Data comes from the tiny-cpu preset's stages (built under runs/bench-pretrain if missing).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox_throughput import save_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "pretrain" / "tiny-cpu.yaml"


def prepare(out_dir: Path, seq_len: int) -> None:
    if not (out_dir / "shards" / "train" / "meta.json").exists():
        subprocess.run([sys.executable, "-m", "pretrain", "shards", "--config", str(PRESET), f"out_dir={out_dir}",
                        f"data.seq_len={seq_len}"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def crop_pad_baseline(lengths: list[int], window: int) -> dict:
    """One document (+EOS) per window, cropped at the window edge, padded below it."""
    placed = sum(min(n + 1, window) for n in lengths)
    return {"packing_efficiency": placed / (len(lengths) * window),
            "tokens_cropped_share": sum(max(0, n + 1 - window) for n in lengths) / sum(n + 1 for n in lengths)}


def bench_loader(out_dir: Path, seq_len: int, fim_rate: float, num_windows: int) -> dict:
    from transformers import AutoTokenizer

    from pretrain.data import DocStore, LoaderConfigView, PackedLoader
    from pretrain.fim import FimSpecials
    from pretrain.tokenizer import fim_ids

    tok = AutoTokenizer.from_pretrained(str(out_dir / "tokenizer"))
    loader = PackedLoader(DocStore(out_dir / "shards" / "train"), tok, LoaderConfigView(seq_len, 8, fim_rate),
                          FimSpecials(**fim_ids(tok)))
    t0 = time.perf_counter()
    for _ in range(num_windows // 8):
        loader.next_batch()
    dt = time.perf_counter() - t0
    stats = loader.packer.stats
    return {"fim_rate": fim_rate, "tokens_per_s": stats.windows * seq_len / dt, "windows": stats.windows,
            "packing_efficiency": stats.packing_efficiency(seq_len),
            "fim_share": stats.fim_docs / max(1, stats.docs), "seconds": dt}


def bench_train(out_dir: Path, optim: str, steps: int, seq_len: int) -> dict:
    cmd = [sys.executable, "-m", "pretrain", "train", "--config", str(PRESET), f"out_dir={out_dir}",
           f"data.seq_len={seq_len}", f"train.steps={steps}", f"eval.every={steps}", "eval.compile_prompts=0",
           "eval.fim_examples=0", f"checkpoint.every={steps}", "checkpoint.resume=false", f"optim.name={optim}",
           "tensorboard=false"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    import json

    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [r["perf/tokens_per_s"] for r in rows[-(steps // 2):]]  # the second half: warm caches
    (out_dir / "metrics.jsonl").unlink()
    return {"optim": optim, "tokens_per_s_mean": summary["tokens_per_s"],
            "tokens_per_s_steady": sorted(steady)[len(steady) // 2], "val_bpb": summary["val_bpb"],
            "final_loss_ema": summary["train_loss_ema"], "steps": steps}


def bench_tokenizers(data: Path) -> dict:
    from pretrain.reference_tokenizers import available_reference_tokenizers
    from pretrain.reference_tokenizers import tokens_per_byte as reference_tokens_per_byte
    from pretrain.tokenizer import read_texts, tokens_per_byte, train_tokenizer

    val = list(read_texts(data / "corpus" / "val.jsonl"))
    ours = {f"crucible BPE, vocab {v}": tokens_per_byte(train_tokenizer(read_texts(data / "corpus" / "train.jsonl"),
                                                                        v), val) for v in (2048, 8192, 32768)}
    refs = {name: reference_tokens_per_byte(count, val) for name, count in available_reference_tokenizers().items()}
    return {"val_bytes": sum(len(t.encode()) for t in val), "tokens_per_byte": {**ours, **refs}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--windows", type=int, default=4000)
    parser.add_argument("--out", default="bench/results/pretrain_throughput.json")
    args = parser.parse_args()
    data = REPO / "runs" / f"bench-pretrain-{args.seq_len}"
    prepare(data, args.seq_len)
    import json

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(data / "tokenizer"))
    texts = [json.loads(line)["text"] for line in (data / "corpus" / "train.jsonl").read_text().splitlines()]
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]  # whole source files
    report = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "seq_len": args.seq_len, "documents": len(lengths), "tokens": sum(lengths),
              "crop_pad_baseline": crop_pad_baseline(lengths, args.seq_len),
              "loader": [bench_loader(data, args.seq_len, rate, args.windows) for rate in (0.5, 0.0)],
              "train": [bench_train(data, optim, args.steps, args.seq_len) for optim in ("muon", "adamw")],
              "tokenizers": bench_tokenizers(data)}
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
