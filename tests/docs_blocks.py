"""The shell blocks of the user docs, and a way to run one verbatim the way a user would.

Every ```bash block in `DOCS` carries a marker on the line above it:
  <!-- run-in-tests -->            tests/integration/test_docs_commands.py runs it verbatim;
  <!-- run-in-tests: NAME -->      the test that owns NAME runs it (e.g. `rlvr-job`: the RLVR reference run);
  <!-- not run: REASON -->         it is not run, and REASON says why (GPUs, a cluster, your own files...).
A block runs with `bash -euo pipefail` in a copy of the checkout (tracked and unignored files, `.venv` linked)
with HOME in a temporary directory, so what it writes (runs/, ~/.crucible) cannot leak into the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/rlvr.md", "docs/grafana.md", "docs/walkthrough.md")
MARKER = re.compile(r"^<!-- (run-in-tests(?:: (?P<name>[\w-]+))?|not run: (?P<reason>.+)) -->$")


@dataclass(frozen=True)
class Block:
    file: str
    line: int        # of the opening fence
    marker: str      # "run", "run:NAME" or "not run"
    text: str

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def bash_blocks(rel: str) -> list[Block]:
    lines = (REPO / rel).read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            m = MARKER.match(prev)
            marker = "" if m is None else ("not run" if m["reason"] else f"run:{m['name']}" if m["name"] else "run")
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            out.append(Block(rel, i + 1, marker, "\n".join(lines[i + 1:end]) + "\n"))
            i = end
        i += 1
    return out


def all_blocks() -> list[Block]:
    return [b for rel in DOCS for b in bash_blocks(rel)]


def named_block(name: str) -> Block:
    """The one text marked `run-in-tests: name` (the same block may appear in several files, identically)."""
    texts = {b.text for b in all_blocks() if b.marker == f"run:{name}"}
    assert len(texts) == 1, f"blocks marked run-in-tests: {name} must exist and be identical, found {len(texts)}"
    return next(b for b in all_blocks() if b.marker == f"run:{name}")


def checkout_copy(dest: Path) -> Path:
    """The checkout as a fresh clone plus `make setup` would have it: git's tracked and unignored files, and
    the venv (linked, not copied)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


def run_block(block: Block, tree: Path, home: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run the block's text verbatim in `tree` with a user's environment: this machine's PATH without the
    venv (the docs must say `.venv/bin/...` or set PATH themselves), HOME in `home`, no Ray variables.

    The build cache stays this machine's (CRUCIBLE_CACHE, default ~/.cache/crucible of the real HOME), as a user's
    would: a fresh HOME alone would rebuild the cached tiny policy in every block (over 2 minutes on 2 cores)."""
    venv_bin = str(REPO / ".venv" / "bin")
    path = ":".join(p for p in os.environ["PATH"].split(":") if p and p != venv_bin and ".venv" not in p)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VIRTUAL_ENV", "PYTEST_"))}
    env.setdefault("CRUCIBLE_CACHE", str(Path.home() / ".cache" / "crucible"))
    env.update({"PATH": path, "HOME": str(home), "PWD": str(tree)})
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=timeout)
