"""The task examples in the docs are real: every fenced `yaml`/`jsonl` task list in docs/*.md loads, each
reference passes in the sandbox, and a wrong answer that compiles fails by the tests (never by a compile
error, which would prove nothing about the tests). The prompt shapes of docs/tasks.md (templates, helpers,
structs, out-of-class members, namespaces, globals, deduced returns) are among them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from rewards.__main__ import main, probe_completion
from rewards.scorer import Scorer
from rewards.tasks import load_tasks
from tests.conftest import backend_skip_reason

DOCS = Path(__file__).resolve().parents[3] / "docs"
FENCE = re.compile(r"^```(yaml|jsonl)\n(.*?)^```", re.M | re.S)


def task_lists() -> list[tuple[str, str, str]]:
    """(doc:line, suffix, text) of each fenced block that is a list of tasks (rows with a task_id)."""
    found = []
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text()
        for m in FENCE.finditer(text):
            kind, body = m.groups()
            rows = ([json.loads(line) for line in body.splitlines() if line.strip()] if kind == "jsonl"
                    else yaml.safe_load(body))
            if isinstance(rows, list) and rows and all(isinstance(r, dict) and "task_id" in r for r in rows):
                found.append((f"{doc.name}:{text.count(chr(10), 0, m.start()) + 1}", kind, body))
    return found


def test_docs_hold_task_examples_of_every_kind_and_shape():
    blocks = task_lists()
    assert len(blocks) >= 2, blocks
    ids = {t["task_id"] for _, kind, body in blocks for t in yaml.safe_load(body) if kind == "yaml"}
    for shape in ("template_max", "helpers", "struct_members", "member_out_of_class", "namespace",
                  "global_table", "deduced_return", "mean_of_two", "return_forty_two"):
        assert f"crucible/doc/{shape}" in ids


@pytest.fixture
def bwrap_scorer(make_pool):
    reason = backend_skip_reason("bwrap")
    if reason:
        pytest.skip(reason)
    return Scorer(make_pool("bwrap"))


@pytest.mark.parametrize("where,kind,body", task_lists(), ids=lambda v: v if isinstance(v, str) and ":" in v else "")
def test_doc_examples_pass_and_a_wrong_answer_fails_by_the_tests(tmp_path, bwrap_scorer, where, kind, body):
    path = tmp_path / f"example.{kind}"
    path.write_text(body)
    tasks = load_tasks(path)
    probes = [(t, probe_completion(t)) for t in tasks if probe_completion(t) is not None]
    scored = bwrap_scorer.score([(t, t.reference) for t in tasks] + probes)
    for task, s in zip(tasks, scored):
        assert s.passed, f"{where}: reference of {task.task_id} fails: {s.verdict} {s.detail}"
    for (task, _), s in zip(probes, scored[len(tasks):]):
        assert not s.passed and s.verdict in ("WRONG_ANSWER", "RUNTIME_ERROR"), \
            f"{where}: wrong answer to {task.task_id}: {s.verdict} {s.detail}"
        assert s.tests_passed < s.tests_total


def test_validate_reports_a_user_file_with_a_typo(tmp_path, bwrap_scorer, capsys):
    """`rewards validate` on a user-style file: a template task, a helper task, and a record with a typo."""
    (_, _, body), = [b for b in task_lists() if "template_max" in b[2]]
    rows = [r for r in yaml.safe_load(body) if r["task_id"] in ("crucible/doc/template_max", "crucible/doc/helpers")]
    rows.append({"task_id": "user/typo", "kind": "stdio", "prompt": "int main() {\n", "reference": "}\n",
                 "cases": [{"input": "", "output": ""}], "chekcer": "exact"})
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(rows, sort_keys=False))
    assert main(["validate", "--tasks", str(path), "--backend", "bwrap", "--workers", "2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[-1]) == {"tasks": 3, "ok": 2, "warn": 0, "error": 1, "invalid": 1}
    assert any(line.startswith("ok") and "template_max" in line and "fails (WRONG_ANSWER" in line for line in out)
    assert any("mine.yaml:" in line and "unknown field 'chekcer' (did you mean 'checker'?)" in line for line in out)
