"""`python -m rewards eval/score`, the TRL and verl call signatures, and the embedded task set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rewards.adapters import CppReward
from rewards.tasks import load_embedded
from sandbox.config import SandboxConfig
from tests.conftest import REPO
from tests.integration.rewards.test_integrity import ADD, DOUBLED

STDIO = {"task_id": "io/sum", "kind": "stdio", "prompt": "#include <iostream>\nint main() {\n",
         "cases": [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10\n"}],
         "reference": "  long a, b; std::cin >> a >> b; std::cout << a + b << '\\n';\n}\n"}


def run_cli(*args: str) -> tuple[int, dict, str]:
    proc = subprocess.run([sys.executable, "-m", "rewards", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    lines = proc.stdout.strip().splitlines()
    return proc.returncode, (json.loads(lines[-1]) if lines else {}), proc.stderr + proc.stdout


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.jsonl"
    rows = [{"task_id": ADD.task_id, "prompt": ADD.prompt, "tests": ADD.tests, "reference": ADD.reference},
            STDIO]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_cli_writes_one_line_per_completion_in_order(backend, task_file: Path, tmp_path: Path):
    completions = tmp_path / "c.jsonl"
    rows = [(ADD.task_id, "  return a + b;\n}\n"), (ADD.task_id, "  return a - b;\n}\n"),
            (ADD.task_id, "  return a + b\n}\n"), ("io/sum", STDIO["reference"]),
            ("io/sum", "  std::cout << 3 << '\\n';\n}\n"), (ADD.task_id, "  return b + a;\n}\n")]
    completions.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in rows))
    out = tmp_path / "out.jsonl"
    code, summary, _ = run_cli("eval", "--tasks", str(task_file), "--completions", str(completions),
                               "--backend", backend, "--out", str(out))
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in lines] == [t for t, _ in rows]
    assert [r["passed"] for r in lines] == [True, False, False, True, False, True]
    assert [r["verdict"] for r in lines] == ["OK", "WRONG_ANSWER", "COMPILE_ERROR", "OK", "WRONG_ANSWER", "OK"]
    assert lines[1]["tests_passed"] == 0 and lines[1]["tests_total"] == 3
    assert lines[4]["tests_passed"] == 1 and lines[4]["tests_total"] == 2
    assert {"reward/compile", "reward/warnings", "reward/tests", "reward/reasoning"} <= lines[0].keys()
    assert summary["samples"] == 6 and summary["passed"] == 3
    # add: 4 samples (2 pass) -> pass@1 = 0.5; io/sum: 2 samples (1 pass) -> 0.5
    assert summary["pass@1"] == 0.5 and summary["pass@2"] == pytest.approx((1 - 1 / 6 + 1.0) / 2, abs=1e-4)
    assert summary["verdicts"] == {"OK": 3, "WRONG_ANSWER": 2, "COMPILE_ERROR": 1}


def test_eval_cli_canonical_and_score_groups(backend, task_file: Path):
    code, summary, _ = run_cli("eval", "--tasks", str(task_file), "--completions", "canonical", "--backend", backend)
    assert code == 0 and summary["pass@1"] == 1.0 and summary["samples"] == 2
    code, summary, text = run_cli("score", "--tasks", str(task_file), "--completions", "canonical",
                                  "--backend", backend)
    assert code == 0 and summary["groups"] == 2 and "reward 6.5 +- 0.0" in text


def test_eval_cli_bad_input_names_the_line(task_file: Path, tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_id": ADD.task_id, "completion": "x"}) + "\n" + '{"task_id": "nope", "completion": ""}\n')
    code, _, err = run_cli("eval", "--tasks", str(task_file), "--completions", str(bad))
    assert code == 2 and "bad.jsonl:2: task_id 'nope' is not in the task file" in err


@pytest.fixture
def reward(backend):
    fn = CppReward([ADD, DOUBLED], sandbox=SandboxConfig(backend=backend, num_workers=2))
    yield fn
    fn.close()


def test_trl_signature(reward):
    """Called exactly as TRL's GRPOTrainer calls reward functions: keyword lists plus dataset columns."""
    prompts = [ADD.prompt] * 2 + [DOUBLED.prompt]
    completions = ["  return a + b;\n}\n", "  return a * b;\n}\n", "  return v;\n}\n"]
    rewards = reward(prompts=prompts, completions=completions, completion_ids=[[1], [2], [3]],
                     task_id=[ADD.task_id, ADD.task_id, DOUBLED.task_id], trainer_state=None)
    assert rewards[0] == 6.5 and rewards[1] < 6.5 and rewards[2] < 6.5
    conversational = [[{"role": "assistant", "content": "  return a + b;\n}\n"}]]
    assert reward(prompts=[ADD.prompt], completions=conversational, task_id=[ADD.task_id]) == [6.5]
    assert reward.__name__ == "cpp_reward"
    with pytest.raises(ValueError, match="task_id"):
        reward(prompts=[ADD.prompt], completions=["x"])


def test_verl_signature(reward):
    """Called as verl's reward managers call compute_score: per sample, and batched with lists."""
    one = reward.compute_score(data_source="crucible", solution_str="  return a + b;\n}\n",
                               ground_truth=ADD.task_id, extra_info={"index": 0})
    assert one["score"] == 6.5 and one["passed"] == 1.0 and one["sandbox_error"] == 0.0
    as_json = json.dumps({"task_id": "inline", "prompt": ADD.prompt, "tests": ADD.tests})
    batch = reward.compute_score(data_source=["crucible"] * 2, solution_str=["  return a + b;\n}\n", "oops"],
                                 ground_truth=[as_json, ADD.task_id], extra_info=[{}, {}])
    assert [b["passed"] for b in batch] == [1.0, 0.0] and batch[1]["score"] == -1.0


@pytest.mark.slow
def test_every_embedded_reference_passes_and_tiers_exist(make_pool):
    from rewards.scorer import Scorer, canonical_items

    tasks = load_embedded()
    assert len(tasks) >= 60
    assert {t.tier for t in tasks} >= {0, 1, 2} and {t.kind for t in tasks} == {"function", "stdio", "compile"}
    scored = Scorer(make_pool("docker" if _docker() else "bwrap")).score(canonical_items(tasks))
    failures = [(s.task_id, s.verdict, s.detail) for s in scored if not s.passed]
    assert not failures, failures


def _docker() -> bool:
    from tests.conftest import _docker_ready

    return _docker_ready() is None
