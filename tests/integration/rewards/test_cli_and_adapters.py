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
    # each row explains itself: the failing asserts, the first compiler error located in the completion,
    # the first failing stdio case with its input, expected and actual output
    assert lines[1]["detail"].startswith("0/3 asserts passed; failed #1 `assert(add(1, 2) == 3);`")
    assert lines[2]["detail"].startswith("completion:") and "error:" in lines[2]["detail"]
    assert "completion:1:15: error: expected ';'" in lines[2]["diagnostics"]
    assert "    1 |   return a + b" in lines[2]["diagnostics"] and "solution.cpp" not in lines[2]["diagnostics"]
    assert lines[4]["detail"] == ("case 2/2: output differs (tokens checker); input '5 5\\n'; expected '10\\n'; "
                                  "got '3\\n'")


def test_eval_rows_explain_warnings_and_crashes_and_carry_the_completion(backend, task_file: Path, tmp_path: Path):
    completions = tmp_path / "c.jsonl"
    rows = [(ADD.task_id, "  int unused = 0;\n  return a + b;\n}\n"),
            (ADD.task_id, '  fprintf(stderr, "bad input %d\\n", a);\n  abort();\n}\n')]
    completions.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in rows))
    out = tmp_path / "out.jsonl"
    code, _, _ = run_cli("eval", "--tasks", str(task_file), "--completions", str(completions), "--backend", backend,
                         "--out", str(out))
    assert code == 0
    warned, crashed = [json.loads(line) for line in out.read_text().splitlines()]
    assert [warned["index"], crashed["index"]] == [0, 1] and crashed["completion"] == rows[1][1]
    assert warned["passed"] and warned["reward/warnings"] == 0.0
    assert warned["detail"] == ("1 warning(s) in the completion, first: completion:1:7: warning: unused variable "
                                "'unused' [-Wunused-variable]")
    assert crashed["verdict"] == "RUNTIME_ERROR" and "SIGABRT" in crashed["detail"]
    assert "stderr 'bad input 1'" in crashed["detail"], crashed["detail"]


def test_task_time_and_memory_limits_bind(backend, make_pool):
    """A task's own `time_limit_s` and `memory_mb` are what the sandbox enforces, both ways."""
    from dataclasses import replace

    from rewards.scorer import Scorer
    from rewards.tasks import task_from_row

    spin = task_from_row(dict(STDIO, task_id="io/spin", time_limit_s=0.5), "t")
    hog = task_from_row(dict(STDIO, task_id="io/hog", memory_mb=64), "t")
    slow = ("  volatile unsigned long x = 0; for (unsigned long i = 0; i < 2500000000UL; ++i) x += i;\n"
            "  long a, b; std::cin >> a >> b; std::cout << a + b << '\\n';\n}\n")
    big = ("  std::vector<char> v(200u << 20, 1); long a, b; std::cin >> a >> b;\n"
           "  std::cout << a + b + v[12345] - 1 << '\\n';\n}\n")
    hog = replace(hog, prompt="#include <iostream>\n#include <vector>\nint main() {\n")
    roomy_hog = replace(hog, memory_mb=512)
    roomy_spin = replace(spin, time_limit_s=8.0)
    scored = Scorer(make_pool(backend)).score([(spin, slow), (roomy_spin, slow), (hog, big), (roomy_hog, big)])
    assert [s.verdict for s in scored] == ["TIME_LIMIT", "OK", "MEMORY_LIMIT", "OK"], [s.detail for s in scored]


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


def test_eval_cli_refuses_an_oversized_completion_at_load(task_file: Path, tmp_path: Path):
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"task_id": ADD.task_id, "completion": "  return a + b;\n}\n"}) + "\n"
                   + json.dumps({"task_id": ADD.task_id, "completion": "//" + "x" * (300 << 10)}) + "\n")
    code, _, err = run_cli("eval", "--tasks", str(task_file), "--completions", str(big))
    assert code == 2 and "big.jsonl:2: field 'completion' is 307202 bytes, over the 262144-byte limit" in err


def test_explain_shows_sources_compiler_asserts_and_reward(backend, task_file: Path, tmp_path: Path):
    completion = tmp_path / "c.txt"
    completion.write_text("  if (a == 1) return 3;\n  return a - b;\n}\n")
    code, row, text = run_cli("explain", "--tasks", str(task_file), "--task-id", ADD.task_id, "--completion",
                              str(completion), "--backend", backend)
    assert code == 0, text
    assert "===== solution.cpp (the completion starts at line 6)" in text and "===== harness.cpp" in text
    assert "   6 |   if (a == 1) return 3;" in text
    assert "assert #1   pass        assert(add(1, 2) == 3);" in text
    assert "assert #2   FAIL        assert(add(-1, 1) == 0);" in text and "ran to the end: True" in text
    assert "===== reward compile +1, warnings +0.5, tests +1.66667, reasoning +0 = 3.166667" in text
    assert row["verdict"] == "WRONG_ANSWER" and row["tests_passed"] == 1
    code, row, text = run_cli("explain", "--tasks", str(task_file), "--task-id", "io/sum", "--completion", "canonical",
                              "--backend", backend)
    assert code == 0 and row["passed"] and "case 2: OK" in text and "expected '10\\n'" in text


@pytest.fixture
def reward(backend):
    fn = CppReward([ADD, DOUBLED], sandbox=SandboxConfig(backend=backend, num_workers=2))
    yield fn
    fn.close()


def test_trl_signature(reward):
    """Called exactly as TRL's GRPOTrainer calls reward functions: keyword lists plus dataset columns."""
    prompts = [ADD.prompt] * 2 + [DOUBLED.prompt]
    completions = ["  return a + b;\n}\n", "  return a * b;\n}\n", "  return v;\n}\n"]
    extra, metrics = {}, {}
    # TRL 1.16 GRPOTrainer._calculate_rewards: reward_func(prompts=, completions=, completion_ids=, **reward_kwargs)
    # with reward_kwargs = dataset columns + trainer_state + log_extra + log_metric
    rewards = reward(prompts=prompts, completions=completions, completion_ids=[[1], [2], [3]],
                     task_id=[ADD.task_id, ADD.task_id, DOUBLED.task_id], trainer_state=None,
                     log_extra=lambda column, values: extra.setdefault(column, []).extend(values),
                     log_metric=lambda name, value: metrics.setdefault(name, []).append(value))
    assert rewards[0] == 6.5 and rewards[1] < 6.5 and rewards[2] < 6.5
    assert extra["verdict"] == ["OK", "WRONG_ANSWER", "WRONG_ANSWER"] and extra["compile_error"] == ["", "", ""]
    assert metrics["cpp/compile_rate"] == [1.0] and metrics["cpp/pass_rate"] == [pytest.approx(1 / 3)]
    broken = reward(prompts=[ADD.prompt], completions=["  return a +;\n}\n"], task_id=[ADD.task_id],
                    log_extra=lambda column, values: extra.setdefault(column, []).extend(values))
    assert broken == [-1.0] and "error:" in extra["compile_error"][-1] and "completion:1:" in extra["compile_error"][-1]
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
    # verl's BatchRewardManager: compute_score(data_sources=, solution_strs=, ground_truths=, extra_infos=,
    # **reward_kwargs)
    plural = reward.compute_score(data_sources=["crucible"] * 2, solution_strs=["  return a + b;\n}\n", "oops"],
                                  ground_truths=[ADD.task_id, ADD.task_id], extra_infos=[{}, {}], backend="ignored")
    assert [b["passed"] for b in plural] == [1.0, 0.0]


def test_verl_module_function_takes_reward_kwargs(backend, task_file: Path):
    """`custom_reward_function.path=rewards/adapters.py` with reward_kwargs naming the task file, the backend
    and the worker count; verl binds reward_kwargs to both the naive and the batch call."""
    from rewards.adapters import compute_score, default_reward

    kwargs = {"tasks_path": str(task_file), "backend": backend, "workers": 1}
    try:
        one = compute_score(data_source="crucible", solution_str="  return a + b;\n}\n", ground_truth=ADD.task_id,
                            extra_info={}, **kwargs)
        many = compute_score(data_sources=["c", "c"], solution_strs=["  return a + b;\n}\n", STDIO["reference"]],
                             ground_truths=[ADD.task_id, "io/sum"], extra_infos=[{}, {}], **kwargs)
        assert one["passed"] == 1.0 and [m["passed"] for m in many] == [1.0, 1.0]
        assert default_reward(str(task_file), backend, 1, "raw")._pool.config.num_workers == 1
    finally:
        default_reward(str(task_file), backend, 1, "raw").close()


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
