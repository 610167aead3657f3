"""`python -m pretrain [stage] --config configs/pretrain/tiny-cpu.yaml [key=value ...]`

Stages: `all` (default: corpus -> tokenizer -> shards -> train, each skipped when its output exists), or one of
`corpus`, `tokenizer`, `shards`, `train`. For FSDP2 launch the train stage with torchrun, e.g.
`torchrun --nproc-per-node 8 -m pretrain --config ... train.parallel=fsdp2` (rank 0 builds the data, the
other ranks wait for it).
The last stdout line is one JSON summary: checkpoint, steps, val_bpb, tokens_per_byte, packing_efficiency, ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import time

from configs.base import check_lineage
from configs.loader import ConfigError, add_config_arguments, cli_error, load_config, print_config, run_cli
from pretrain.config import PretrainConfig

STAGES = ("all", "corpus", "tokenizer", "shards", "train")


def _run(stage: str, cfg: PretrainConfig) -> dict:
    from pretrain import stages

    rank = int(os.environ.get("RANK", "0"))
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:  # the resolved config next to the run's outputs (its corpus was built under this split)
        check_lineage(cfg.out_dir, cfg.corpus.split, "corpus.split", own_output=True)
        stages.check_outputs(cfg, training=stage in ("all", "train"))  # reused data and the resumed checkpoint match these settings
        (cfg.out_dir / "config.json").write_text(cfg.model_dump_json(indent=1))
    summary: dict = {}
    if stage in ("all", "corpus", "tokenizer", "shards") and rank == 0:
        data = {"corpus": stages.run_corpus(cfg)}
        if stage != "corpus":
            data["tokenizer"] = stages.run_tokenizer(cfg)
        if stage in ("all", "shards"):
            data["shards"] = stages.run_shards(cfg)
        summary.update(_data_summary(data))
    if stage in ("all", "train"):
        from pretrain.train import Trainer

        if stage == "all" and rank > 0:  # rank 0 builds the data; torchrun stops everyone if it fails
            while not (stages.paths(cfg).val / "meta.json").exists():
                time.sleep(2)
        if not (stages.paths(cfg).train / "meta.json").exists():
            raise ValueError(f"no shards under {stages.paths(cfg).train}: run `python -m pretrain shards` first")
        summary.update(Trainer(cfg).fit())
        report = stages.paths(cfg).tokenizer / "tokenizer_report.json"
        if report.exists() and "tokens_per_byte" not in summary:
            summary["tokens_per_byte"] = json.loads(report.read_text()).get("tokens_per_byte")
    return summary


def _data_summary(data: dict) -> dict:
    out = {"corpus_files": data["corpus"].get("files_kept"), "corpus_bytes": data["corpus"].get("bytes_kept"),
           "dedup_rate": data["corpus"].get("dedup_rate")}
    if "tokenizer" in data:
        out["tokens_per_byte"] = data["tokenizer"].get("tokens_per_byte")
        out["tokens_per_byte_references"] = data["tokenizer"].get("references")
    if "shards" in data:
        out["train_tokens"] = data["shards"]["train"]["num_tokens"]
        out["val_tokens"] = data["shards"]["val"]["num_tokens"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain", description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("stage", nargs="?", default="all", help="one of " + ", ".join(STAGES))
    add_config_arguments(parser, stage="pretrain", default_config="configs/pretrain/tiny-cpu.yaml", model=PretrainConfig,
                         example="train.steps=20 data.fim_rate=0.5")
    args = parser.parse_intermixed_args(argv)
    if args.stage not in STAGES:  # a key=value given without a stage lands here
        args.overrides.insert(0, args.stage)
        args.stage = "all"
    try:
        cfg = load_config(PretrainConfig, args.config or [args.config_default], args.overrides, stage="pretrain")
    except ConfigError as exc:
        return cli_error(str(exc), 2, "config error")
    if args.print_config:
        return print_config(cfg)
    try:
        summary = _run(args.stage, cfg)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        return cli_error(str(exc), 1)
    except Exception as exc:  # a bug, not bad input: the traceback for the report, the JSON line for scripts
        traceback.print_exc()
        return cli_error(f"unexpected {type(exc).__name__}: {exc}", 1)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
