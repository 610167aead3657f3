"""`python -m learner --config configs/rlvr/tiny-cpu.yaml [key=value ...]` — run GRPO; the last stdout line is
one JSON summary (checkpoint, steps, reward_mean_first, reward_mean_last, report, ...).

Runs directly (attaching to a running Ray cluster or starting a local one) or under
`ray job submit --working-dir . -- python -m learner ...`.
"""

from __future__ import annotations

import sys

from configs.loader import config_cli
from learner.config import RLVRConfig


def run(cfg: RLVRConfig) -> dict:
    from learner.driver import run as run_grpo  # Ray, vLLM and torch load only once the config is valid

    return run_grpo(cfg)


def main(argv: list[str] | None = None) -> int:
    return config_cli(argv, prog="python -m learner", description=__doc__.split("\n")[0],
                      default_config="configs/rlvr/tiny-cpu.yaml", model=RLVRConfig, run=run,
                      example="run.steps=3 learner.backend=fsdp2", failures=(ValueError, RuntimeError))


if __name__ == "__main__":
    sys.exit(main())
