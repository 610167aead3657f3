"""docs/config-reference.md is what `python -m configs.reference` prints from the models today."""

from __future__ import annotations

from pathlib import Path

from configs.reference import render

REPO = Path(__file__).resolve().parents[3]


def test_the_committed_config_reference_is_current():
    committed = (REPO / "docs" / "config-reference.md").read_text()
    assert committed == render(), "stale: run `.venv/bin/python -m configs.reference > docs/config-reference.md`"
    assert "| `run.steps` | `int` | `3` | GRPO steps |" in committed
