"""`python -m learner --config configs/rlvr/tiny-cpu.yaml [key=value ...]` — run GRPO; the last stdout line is
one JSON summary (checkpoint, steps, reward_mean_first, reward_mean_last, report, ...).

Runs directly (attaching to a running Ray cluster or starting a local one) or under
`ray job submit --working-dir . -- python -m learner ...`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from configs.loader import config_cli, run_cli
from learner.config import RLVRConfig, absolute_out_dir


def run(cfg: RLVRConfig) -> dict:
    from learner.driver import run as run_grpo  # Ray, vLLM and torch load only once the config is valid

    # Absolute from here on: the summary, the report and every checkpoint path name where the files really are.
    out_dir, warning = absolute_out_dir(cfg.run.out_dir, Path.cwd())
    if warning:
        logging.getLogger("crucible.learner").warning(warning)
    return run_grpo(cfg.model_copy(update={"run": cfg.run.model_copy(update={"out_dir": out_dir})}))


def dry_run(cfg: RLVRConfig) -> dict:
    from learner.driver import dry_run as check

    return check(cfg)


def main(argv: list[str] | None = None) -> int:
    return config_cli(argv, prog="python -m learner", description=__doc__.split("\n\n")[0].replace("\n", " "),
                      default_config="configs/rlvr/tiny-cpu.yaml", model=RLVRConfig, run=run,
                      example="run.steps=3 learner.backend=fsdp2", failures=(ValueError, RuntimeError),
                      dry_run=dry_run)


if __name__ == "__main__":
    sys.exit(run_cli(main))
