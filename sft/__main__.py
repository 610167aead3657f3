"""`python -m sft data --config configs/sft/tiny-cpu.yaml [key=value ...]`

Subcommands: `data` (build the SFT dataset; training comes later). The last stdout line is one JSON summary:
out_dir, samples per split, counts per kind, seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from configs.loader import ConfigError, cli_error, load_config
from sft.dataset import DataConfig, build_dataset

COMMANDS = ("data", "train")
IMPLEMENTED = ("data",)


class SFTDataRoot(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out_dir: Path = Field(Path("runs/sft-tiny-cpu"), description="where the data directory is written")
    data: DataConfig = Field(default_factory=DataConfig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft", description=__doc__.split("\n")[0])
    parser.add_argument("command", help="one of " + ", ".join(COMMANDS))
    parser.add_argument("--config", default="configs/sft/tiny-cpu.yaml", help="YAML preset")
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. data.max_files=20")
    args = parser.parse_intermixed_args(argv)
    if args.command not in IMPLEMENTED:
        known = "not implemented yet" if args.command in COMMANDS else "unknown command"
        return cli_error(f"`{args.command}`: {known} (available: {', '.join(IMPLEMENTED)})", 2)
    try:
        cfg = load_config(SFTDataRoot, args.config, args.overrides)
    except ConfigError as exc:
        return cli_error(str(exc), 2)
    data_dir = cfg.out_dir / "data"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        (cfg.out_dir / "config.json").write_text(cfg.model_dump_json(indent=1))  # the resolved config
        stats = build_dataset(cfg.data, data_dir)
    except (ValueError, FileNotFoundError) as exc:
        return cli_error(str(exc), 1)
    print(json.dumps({"out_dir": str(data_dir), **stats["num_samples"], "kinds": stats["kinds"],
                      "duplicates_removed": stats["duplicates_removed"], "seconds": stats["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
