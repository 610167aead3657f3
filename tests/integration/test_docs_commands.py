"""The user docs' shell blocks work as written (tests/docs_blocks.py): each says whether it runs, and those
marked `run-in-tests` run verbatim, on a copy of the checkout, as a user would type them after `make setup`."""

from __future__ import annotations

import json
import re

import pytest

from learner.local_head import LocalRayHead
from tests.docs_blocks import REPO, all_blocks, checkout_copy, named_block, run_block

RUN = {b.text: b for b in reversed(all_blocks()) if b.marker == "run"}  # identical blocks run once


def test_every_shell_block_says_whether_it_runs():
    blocks = all_blocks()
    assert RUN, "at least one block runs here"
    unmarked = [b.where() for b in blocks if not b.marker]
    assert not unmarked, f"add <!-- run-in-tests --> or <!-- not run: why --> above: {unmarked}"
    # a block owned by another test is really run there
    tests_text = "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py"))
    for name in {b.marker.split(":", 1)[1] for b in blocks if b.marker.startswith("run:")}:
        assert f'named_block("{name}")' in tests_text, f"no test runs the blocks marked run-in-tests: {name}"
        named_block(name)  # and its copies are identical


def test_the_markers_parse_as_intended(tmp_path, monkeypatch):
    import tests.docs_blocks as db

    doc = tmp_path / "x.md"
    doc.write_text("<!-- run-in-tests -->\n```bash\necho a\n```\n\n<!-- not run: needs a GPU -->\n\n```bash\nb\n```\n"
                   "text\n```bash\nc\n```\n<!-- run-in-tests: some-job -->\n```bash\nd\n```\n")
    monkeypatch.setattr(db, "REPO", tmp_path)
    got = [(b.line, b.marker, b.text) for b in db.bash_blocks("x.md")]
    assert got == [(2, "run", "echo a\n"), (8, "not run", "b\n"), (12, "", "c\n"), (16, "run:some-job", "d\n")]


@pytest.mark.slow
@pytest.mark.parametrize("block", list(RUN.values()), ids=[b.where() for b in RUN.values()])
def test_marked_blocks_run_verbatim(block, tmp_path):
    tree, home = checkout_copy(tmp_path / "clone"), tmp_path / "home"
    home.mkdir(parents=True)
    proc = run_block(block, tree, home, timeout=600)
    assert proc.returncode == 0, f"{block.where()} failed (exit {proc.returncode}):\n{block.text}\n" \
                                 f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    if re.search(r"learner\.head start", block.text):  # what it started, it stopped: no head left behind
        assert not (home / ".crucible" / "ray-head" / "state.json").exists()
        started = [json.loads(line) for line in proc.stdout.splitlines() if '"status": "started"' in line]
        assert started and not LocalRayHead.attach({**started[0], "token": ""}).processes()
