"""`python -m sft [train] --config configs/sft/tiny-cpu.yaml [key=value ...]`

Commands:
  train (default)  build the data if missing (and a scratch base when model.name_or_path is unset), then SFT
  data             only build the dataset (Alpaca + chat JSONL, stats.json) under <out_dir>/data
  merge            fold a LoRA adapter into its base: --adapter DIR --out DIR [--base MODEL]
  compare          base vs tuned on a question file and a task file: --base M --tuned M [--questions F]
                   [--tasks embedded|embedded-heldout|FILE] [--out DIR]
Multi-process: `torchrun --nproc-per-node N -m sft --config ... parallel=deepspeed_zero3` (or fsdp).
The last stdout line is one JSON summary (train: checkpoint, eval_loss_first, eval_loss_last, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import time
from pathlib import Path

from configs.base import check_lineage
from configs.loader import ConfigError, add_config_arguments, cli_error, load_config, print_config, run_cli
from sft.config import SFTConfig

COMMANDS = ("train", "data", "merge", "compare")


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m sft {command}", description=__doc__.split("\n\n")[0].replace("\n", " "))
    if command == "merge":
        parser.add_argument("--adapter", help="LoRA adapter dir (default: <out_dir>/adapter)")
        parser.add_argument("--out", help="merged model dir (default: <out_dir>/final)")
        parser.add_argument("--base", help="base model (default: the adapter's base_model_name_or_path)")
    if command == "compare":
        parser.add_argument("--base", help="base model (default: model.name_or_path or <out_dir>/base)")
        parser.add_argument("--tuned", help="tuned model or adapter (default: <out_dir>/final)")
        parser.add_argument("--questions", help="questions .txt/.jsonl (default: <out_dir>/data/eval.chat.jsonl)")
        parser.add_argument("--tasks", default="embedded-heldout", help="task file, embedded or embedded-heldout")
        parser.add_argument("--out", help="output dir (default: <out_dir>/compare)")
        parser.add_argument("--limit", type=int, default=16, help="questions and tasks used (0: all)")
        parser.add_argument("--max-new-tokens", type=int, default=128)
        parser.add_argument("--backend", default="bwrap", choices=["bwrap", "docker"])
    add_config_arguments(parser, stage="sft", default_config="configs/sft/tiny-cpu.yaml", model=SFTConfig,
                         example="train.max_steps=20")
    return parser


def _wait_for(ready, what: str, where: Path, timeout_s: float = 1800) -> None:
    """torchrun ranks > 0 wait for rank 0's data/base (torchrun stops everyone if rank 0 fails)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {os.environ.get('RANK')}: {what} did not appear at {where}")
        time.sleep(1)


def _prepare(cfg: SFTConfig, build_base: bool, rebuild: bool = False, training: bool = False) -> tuple[dict, str | None]:
    """Rank 0 builds the data (and the scratch base); other ranks wait. Returns (data stats, base)."""
    from sft.dataset import build_dataset

    rank0 = int(os.environ.get("RANK", "0")) == 0
    stats_path = cfg.data_dir / "stats.json"
    built_from = cfg.data_dir / "data_config.json"  # rebuilt when the data config changed (or on `data`)
    wanted = cfg.data.model_dump_json(indent=1)
    if rank0:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        check_lineage(cfg.out_dir, cfg.data.split, "data.split", own_output=True)  # its checkpoints trained under that split
        if training:  # the checkpoint it would resume was trained under these settings (before anything is written)
            from sft.train import check_resume_settings

            if diff := check_resume_settings(cfg):
                print(f"[sft] train.resume=force: resuming under changed settings: {'; '.join(diff)}", file=sys.stderr)
        (cfg.out_dir / "config.json").write_text(cfg.model_dump_json(indent=1))
        if rebuild or not stats_path.exists() or not built_from.exists() or built_from.read_text() != wanted:
            built_from.unlink(missing_ok=True)
            stats = build_dataset(cfg.data, cfg.data_dir)
            built_from.write_text(wanted)
        else:
            stats = json.loads(stats_path.read_text())
    else:  # wait for rank 0's data built from this very config
        _wait_for(lambda: built_from.exists() and built_from.read_text() == wanted, "the SFT data", stats_path)
        stats = json.loads(stats_path.read_text())
    if not build_base:
        return stats, None
    if cfg.model.name_or_path is not None:
        return stats, cfg.model.name_or_path
    if rank0:
        from sft.model import build_scratch_base
        from sft.train import read_records

        rows = read_records(cfg.data_dir / "train.chat.jsonl", "chat")
        texts = [m["content"] for r in rows for m in r["prompt"] + r["completion"]]
        build_scratch_base(cfg, texts)
    else:
        _wait_for((cfg.base_dir / "config.json").exists, "the scratch base model", cfg.base_dir)
    return stats, str(cfg.base_dir)


def _train(cfg: SFTConfig) -> dict:
    from sft.train import run_training

    stats, base = _prepare(cfg, build_base=True, training=True)
    summary = run_training(cfg, base)
    return {**summary, "base": base, "data_dir": str(cfg.data_dir), "data_samples": stats["num_samples"]}


def _data(cfg: SFTConfig) -> dict:
    stats, _ = _prepare(cfg, build_base=False, rebuild=True)
    return {"out_dir": str(cfg.data_dir), **stats["num_samples"], "kinds": stats["kinds"],
            "duplicates_removed": stats["duplicates_removed"], "seconds": stats.get("seconds")}


def _merge(cfg: SFTConfig, args) -> dict:
    from sft.merge import merge_adapter

    adapter = Path(args.adapter) if args.adapter else cfg.out_dir / "adapter"
    out = Path(args.out) if args.out else cfg.out_dir / "final"
    return {"checkpoint": str(merge_adapter(adapter, out, base=args.base)), "adapter": str(adapter)}


def _compare(cfg: SFTConfig, args) -> dict:
    from sft.compare import compare

    base = args.base or cfg.model.name_or_path or str(cfg.base_dir)
    tuned = args.tuned or str(cfg.out_dir / "final")
    for flag, given, path in (("--base", args.base or cfg.model.name_or_path, base), ("--tuned", args.tuned, tuned)):
        if not given and not Path(path).exists():  # a default path: the run has not been trained yet
            raise FileNotFoundError(f"{path}: no model there (train first, or pass {flag})")
    questions = Path(args.questions) if args.questions else cfg.data_dir / "eval.chat.jsonl"
    return compare(base, tuned, Path(args.out) if args.out else cfg.out_dir / "compare", questions,
                   args.tasks or None, args.max_new_tokens, args.limit or None, args.backend,
                   plain=cfg.model.chat_template == "none", split=cfg.data.split)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    if argv and not argv[0].startswith("-") and "=" not in argv[0]:
        return cli_error(f"unknown command {argv[0]!r} (one of {', '.join(COMMANDS)})", 2)
    args = _parser(command).parse_intermixed_args(argv)
    try:
        cfg = load_config(SFTConfig, args.config or [args.config_default], args.overrides, stage="sft")
    except ConfigError as exc:
        return cli_error(str(exc), 2)
    if args.print_config:
        return print_config(cfg)
    try:
        if command == "train":
            summary = _train(cfg)
        elif command == "data":
            summary = _data(cfg)
        elif command == "merge":
            summary = _merge(cfg, args)
        else:
            summary = _compare(cfg, args)
    except (ValueError, FileNotFoundError, TimeoutError) as exc:
        return cli_error(str(exc), 1)
    except Exception as exc:  # a bug, not bad input: the traceback for the report, the JSON line for scripts
        traceback.print_exc()
        return cli_error(f"unexpected {type(exc).__name__}: {exc}", 1)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
