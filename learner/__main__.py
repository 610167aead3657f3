"""`python -m learner --config configs/rlvr/tiny-cpu.yaml [key=value ...]` — run GRPO; the last stdout line is
one JSON summary (checkpoint, steps, reward_mean_first, reward_mean_last, report, ...).

Runs directly (attaching to a running Ray cluster or starting a local one) or under
`ray job submit --working-dir . -- python -m learner ...`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from configs.loader import ConfigError, cli_error, load_config
from learner.config import RLVRConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learner", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/rlvr/tiny-cpu.yaml", help="YAML preset")
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. run.steps=3 learner.backend=fsdp2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        cfg = load_config(RLVRConfig, args.config, args.overrides)
    except ConfigError as exc:
        return cli_error(str(exc), 2, "config error")
    from learner.driver import run

    try:
        summary = run(cfg)
    except (ValueError, RuntimeError) as exc:
        return cli_error(str(exc), 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
