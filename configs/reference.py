"""`python -m configs.reference > docs/config-reference.md` — every stage's settable keys, from the pydantic
models (type, default, description). tests/unit/configs/test_config_reference.py fails when the committed file
differs from what this prints, so the reference cannot go stale."""

from __future__ import annotations

import importlib
import sys

# (title, command, module, model class): the stages in pipeline order
STAGES = (
    ("Pretraining", "python -m pretrain --config <file or preset of configs/pretrain/>", "pretrain.config",
     "PretrainConfig"),
    ("SFT", "python -m sft --config <file or preset of configs/sft/>", "sft.config", "SFTConfig"),
    ("RLVR", "python -m learner --config <file or preset of configs/rlvr/>", "learner.config", "RLVRConfig"),
    ("Pipeline", "python -m scripts.pipeline --config <file or preset of configs/pipeline/>", "scripts.pipeline",
     "PipelineConfig"),
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    from configs.loader import field_rows

    out = ["# Config reference", "",
           "Generated from the pydantic models by `python -m configs.reference` (a test fails when this file is "
           "stale). Every key is set in a YAML preset or as `key=value` on the command line; `--help` prints the "
           "same list and `--print-config` the resolved config.", ""]
    for title, command, module, name in STAGES:
        model = getattr(importlib.import_module(module), name)
        out += [f"## {title}", "", f"`{command} [key=value ...]`", "", "| key | type | default | description |",
                "|---|---|---|---|"]
        for row in field_rows(model):
            if "section" in row:
                out.append(f"| **`{row['section']}`** | | | {_cell(row['description'])} |")
            else:
                out.append(f"| `{row['key']}` | `{_cell(row['type'])}` | `{_cell(row['default'])}` | "
                           f"{_cell(row['description'])} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
