"""Harness assembly and line verification (pure), task loaders and their error messages."""

import gzip
import json
from dataclasses import replace
from pathlib import Path

import pytest

from rewards.declarations import declarations_from_prompt
from rewards.harness import assemble, new_secret, verify
from rewards.siphash import siphash24
from rewards.tasks import load_tasks
from rewards.types import StdioCase, Task


def line(secret: str, kind: str, a: int, b: int) -> str:
    tag = siphash24(bytes.fromhex(secret), f"{kind} {a} {b}".encode())
    return f"@@crucible {kind} {a} {b} {tag:016x}\n"


def test_verify_counts_only_authentic_lines():
    s = new_secret()
    out = line(s, "assert", 1, 1) + line(s, "assert", 2, 0) + line(s, "assert", 3, 1) + line(s, "done", 3, 0)
    report = verify(out, s, 3)
    assert (report.completed, report.sites_passed, report.forged_lines) == (True, 2, 0)
    forged = "@@crucible done 3 0 0123456789abcdef\n" + line(new_secret(), "assert", 2, 1)
    report = verify(out + forged, s, 3)
    assert report.sites_passed == 2 and report.forged_lines == 2


def test_verify_requires_a_consistent_done_line():
    s = new_secret()
    asserts = line(s, "assert", 1, 1) + line(s, "assert", 2, 1)
    assert not verify(asserts, s, 2).completed  # exited before the end
    assert not verify(asserts + line(s, "done", 3, 0), s, 2).completed  # a line was dropped
    assert verify(asserts + line(s, "done", 2, 0), s, 2).completed
    loop = line(s, "assert", 1, 1) + line(s, "assert", 1, 0) + line(s, "done", 2, 0)
    assert verify(loop, s, 1).sites_passed == 0  # a site that ever failed does not pass


def test_declarations_turn_bodies_into_prototypes():
    prompt = ('#include <string>\nusing namespace std;\nstring helper(string s){ return s + "{"; }\n'
              "namespace ns { int g(int x) { return x; } }\n/* doc { */\nstring target(string s){\n")
    decl = declarations_from_prompt(prompt)
    assert "string helper(string s);" in decl and "int g(int x);" in decl
    assert decl.rstrip().endswith("string target(string s);") and 'return s + "{"' not in decl
    with pytest.raises(ValueError, match="must end inside the body"):
        declarations_from_prompt("int f();")


def test_assemble_isolates_the_test_unit():
    a = assemble("int add(int a, int b) {\n", "  return a + b;\n}", "#include <cassert>\nint main() {\n"
                 "  assert(add(1, 2) == 3);\n  assert (add(0, 0) == 0);\n}\n")
    assert a.num_sites == 2
    test = a.files["harness.cpp"]
    assert "CRUCIBLE_ASSERT(1, add(1, 2) == 3)" in test and "CRUCIBLE_ASSERT(2, add(0, 0) == 0)" in test
    assert "int add(int a, int b);" in test and "return a + b" not in test
    assert "int crucible_test_main(" in test and "namespace {" in test
    assert a.files["solution.cpp"].startswith("int add(int a, int b) {\n  return a + b;")
    with pytest.raises(ValueError, match="no assert"):
        assemble("int f() {", "}", "int main(){}")


def test_loaders_detect_formats(tmp_path: Path):
    he = tmp_path / "he.jsonl.gz"
    with gzip.open(he, "wt") as f:
        f.write(json.dumps({"task_id": "CPP/0", "prompt": "int f() {\n", "declaration": "int f() {\n",
                            "canonical_solution": "return 1;\n}\n", "test": "int main(){assert(f()==1);}"}) + "\n")
    (task,) = load_tasks(he)
    assert (task.source, task.kind, task.entry_point, task.link_flags) == ("humaneval-x", "function", "f", ("-lcrypto",))
    # HumanEval-X's evaluator puts the includes the prompt lacks first and compiles with -std=c++11
    assert task.preamble.startswith("#include<stdlib.h>\n#include<algorithm>\n") and task.preamble.endswith(">\n\n")
    assert task.program_head == task.preamble + "int f() {\n" and task.flags == ("-std=c++11",)
    assert task.finish == "close-function"
    mpe = tmp_path / "mpe.jsonl"
    mpe.write_text(json.dumps({"name": "HumanEval_1_add", "language": "cpp", "prompt": "long add(long a) {\n",
                               "tests": "}\nint main() {\n    auto candidate = add;\n    assert(candidate(1) == 2);\n}\n",
                               "stop_tokens": ["\n}"]}) + "\n")
    (task,) = load_tasks(mpe)
    # MultiPL-E compiles prompt + completion + "\n" + tests: the "\n" and the tests' brace follow the completion
    assert task.source == "multipl-e" and task.completion_suffix == "\n}" and task.tests.startswith("\nint main")
    assert task.flags == ("-std=c++17",)
    # a copy with a task_id column (DeepSeek-Coder's evaluation data) is still MultiPL-E, named by its task_id
    mpe_id = tmp_path / "mpe_id.jsonl"
    mpe_id.write_text(json.dumps({"task_id": "HumanEval/1", "name": "HumanEval_1_add", "language": "cpp",
                                  "prompt": "long add(long a) {\n", "tests": "}\nint main() { assert(add(1) == 2); }\n",
                                  "stop_tokens": ["\n}"]}) + "\n")
    (task,) = load_tasks(mpe_id)
    assert (task.source, task.task_id, task.completion_suffix) == ("multipl-e", "HumanEval/1", "\n}")
    stdio = tmp_path / "s.jsonl"
    stdio.write_text(json.dumps({"task_id": "s1", "prompt": "int main(){", "cases": [{"input": "1", "output": "1"}],
                                 "checker": "float", "abs_tol": 0.01}) + "\n")
    (task,) = load_tasks(stdio)
    assert task.kind == "stdio" and task.checker == "float" and task.abs_tol == 0.01


@pytest.mark.parametrize("content,message", [
    ('{"task_id": "a", "prompt": "x"\n', r"bad.jsonl:1: invalid JSON"),
    ('\n{"task_id": "a"}\n', r"bad.jsonl:2: task a: field 'prompt' is missing"),
    ('{"task_id": "a", "prompt": "p", "kind": "stdio", "cases": [{"input": 1}]}\n',
     r"field 'cases\[0\]\.input': Input should be a valid string, got 1; field 'cases\[0\]\.output' is missing"),
    # misspelled fields are refused, with the field meant
    ('{"task_id": "a", "prompt": "p", "cases": [{"input": "", "output": ""}], "chekcer": "float"}\n',
     r"bad.jsonl:1: task a: unknown field 'chekcer' \(did you mean 'checker'\?\)"),
    ('{"task_id": "a", "prompt": "p", "cases": [{"input": "", "ouput": ""}]}\n',
     r"unknown field 'cases\[0\]\.ouput' \(did you mean 'output'\?\)"),
    ('{"task_id": "a", "prompt": "p", "kind": "compile", "flag": ["-O2"]}\n', r"unknown field 'flag' \(did you mean"),
    ('{"task_id": "a", "prompt": "p", "kind": "compile", "tier": "1"}\n', r"field 'tier': Input should be a valid int"),
    ('{"task_id": "a", "prompt": "p", "kind": "compile", "memory_mb": 100000}\n', r"field 'memory_mb': .*2048"),
    ('{"task_id": "a", "prompt": "p", "kind": "compile", "time_limit_s": 0}\n', r"field 'time_limit_s': .*greater than 0"),
    ('{"task_id": "a", "prompt": "p", "kind": "stdio"}\n', "needs at least one case"),
    ('{"task_id": "a", "prompt": "p", "cases": [{"input": "", "output": ""}], "checker": "regex"}\n', "checker"),
    ('{"task_id": "a", "prompt": "p", "kind": "compile"}\n{"task_id": "a", "prompt": "p", "kind": "compile"}\n',
     "duplicate task_id 'a'"),
    ("", "has no usable tasks"),
    # function tasks are checked when the file loads, not when a batch is scored
    ('{"task_id": "a", "prompt": "int f() {", "tests": "int main() { return f(); }"}\n',
     r"bad.jsonl:1: task a: field 'tests' has no assert"),
    ('{"task_id": "a", "prompt": "int f() {", "tests": "void t() { assert(f()); }"}\n',
     r"bad.jsonl:1: task a: field 'tests' has no `int main\("),
    ('{"task_id": "a", "prompt": "int f();\\n", "tests": "int main() { assert(f()); }"}\n',
     r"bad.jsonl:1: task a: field 'prompt' must end inside the body"),
    ('{"name": "m", "language": "cpp", "prompt": "int f() {", "tests": "}\\nint main(){assert(f());}", '
     '"stop_tokens": "\\n}"}\n', r"bad.jsonl:1: field 'stop_tokens' must be a list of strings"),
])
def test_loader_errors_name_file_line_and_field(tmp_path: Path, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_tasks(bad)


def test_template_prompt_is_a_function_task():
    prompt = "#include <vector>\ntemplate <typename T> T max_elem(const std::vector<T>& v) {\n"
    decl = declarations_from_prompt(prompt)
    assert decl.rstrip().endswith("T max_elem(const std::vector<T>& v);")


def test_assembled_sites_remember_their_lines_and_verify_reports_them():
    a = assemble("int f() {\n", "  return 1;\n}\n",
                 "int main() {\n  assert(f() == 1);\n  assert (f() == 2);\n  assert(f());\n}")
    assert a.site_lines == ("assert(f() == 1);", "assert (f() == 2);", "assert(f());")
    s = new_secret()
    report = verify(line(s, "assert", 1, 1) + line(s, "assert", 2, 0), s, 3)
    assert (report.sites_passed, report.failed_sites, report.unreached_sites) == (1, (2,), (3,))
    assert not report.completed


def test_missing_task_file():
    with pytest.raises(ValueError, match="does not exist"):
        load_tasks("/nonexistent/tasks.jsonl")


def test_sandbox_error_is_never_turned_into_a_reward():
    from rewards.__main__ import summarize
    from rewards.scorer import Scorer
    from rewards.types import Task
    from sandbox.types import Result, Verdict

    task = Task(task_id="t", kind="function", prompt="int f() {\n", tests="int main(){ assert(f() == 1); }")
    scorer = Scorer(pool=None)
    prep = scorer.prepare(task, "  return 1;\n}\n")
    lost = scorer.judge(task, "  return 1;\n}\n", prep, Result(Verdict.SANDBOX_ERROR, error="worker died", attempts=3))
    assert lost.reward is None and not lost.passed and lost.verdict == "SANDBOX_ERROR"
    summary = summarize([lost])
    assert summary["sandbox_errors"] == 1 and summary["scored"] == 0 and summary["reward_mean"] is None


def test_an_oversized_completion_is_a_compile_failure_that_never_reaches_the_sandbox():
    from rewards.scorer import MAX_COMPLETION_BYTES, Scorer
    from rewards.types import Task

    class NoSandbox:
        def run_batch(self, jobs, progress=False):
            assert jobs == []
            return []

    task = Task(task_id="t", kind="function", prompt="int f() {\n", tests="int main(){ assert(f() == 1); }")
    (s,) = Scorer(pool=NoSandbox()).score([(task, "//" + "x" * MAX_COMPLETION_BYTES + "\n}\n")])
    assert (s.verdict, s.reward, s.passed) == ("COMPILE_ERROR", -1.0, False) and "over the 262144 limit" in s.detail


def test_relative_diagnostics_locate_errors_in_the_completion():
    from rewards.scorer import relative_diagnostics

    out = ("/work/src/solution.cpp: In function 'int f()':\n/work/src/solution.cpp:12:3: error: 'y' was not declared\n"
           "   12 |   y = 1;\n      |   ^\n/work/src/solution.cpp:3:1: note: in the prompt\n")
    text = relative_diagnostics(out, first_line=10)
    assert text.splitlines()[:3] == ["In function 'int f()':", "completion:3:3: error: 'y' was not declared",
                                     "    3 |   y = 1;"]
    assert "prompt:3:1: note" in text and "solution.cpp" not in text
    # an excerpt of another file (a library header, the tests' unit) keeps its own line numbers
    header = ("/work/src/solution.cpp:12:3: error: x\n   12 |   y = 1;\n"
              "/usr/include/c++/12/bits/stl_algo.h:1950:5: note: y\n 1950 |     f();\n")
    assert relative_diagnostics(header, 10).splitlines()[1:] == ["    3 |   y = 1;",
                                                                 "/usr/include/c++/12/bits/stl_algo.h:1950:5: note: y",
                                                                 " 1950 |     f();"]
    assert relative_diagnostics("x" * 5000, 1).endswith("[...]") and len(relative_diagnostics("x" * 5000, 1)) < 2100


def test_yaml_errors_name_the_file_and_line_and_hint_at_block_indentation(tmp_path: Path):
    """The layout a new user copies: a `reference: |` whose first line is deeper than its closing brace."""
    bad = tmp_path / "mine.yaml"
    bad.write_text("- task_id: a\n  prompt: |\n    int f() {\n  reference: |\n        return 1;\n    }\n"
                   "  tests: |\n    int main() { assert(f() == 1); }\n")
    with pytest.raises(ValueError, match=r"mine\.yaml:6: invalid YAML: expected <block end>(.|\n)*`reference: \|2`"):
        load_tasks(bad)


def test_yaml_records_are_named_by_line_and_item_and_lenient_loading_skips_them(tmp_path: Path):
    from rewards.tasks import load_task_file

    path = tmp_path / "mine.yaml"
    path.write_text("- task_id: ok\n  kind: compile\n  prompt: int x;\n"
                    "- task_id: typo\n  kind: compile\n  prompt: int y;\n  tierr: 1\n"
                    "- task_id: ok\n  kind: compile\n  prompt: int z;\n")
    with pytest.raises(ValueError, match=r"mine\.yaml:4 \(item 2\): task typo: unknown field 'tierr' \(did you mean 'tier'\?\)"):
        load_tasks(path)
    loaded = load_task_file(path, lenient=True)
    assert [t.task_id for t in loaded.tasks] == ["ok"]
    assert len(loaded.skipped) == 2 and "mine.yaml:8 (item 3): duplicate task_id 'ok'" in loaded.skipped[1]


def test_task_limits_reach_the_sandbox_job():
    from rewards.scorer import Scorer

    task = Task(task_id="t", kind="stdio", prompt="int main() {\n", cases=(StdioCase("", ""),),
                time_limit_s=1.5, memory_mb=128)
    limits = Scorer(pool=None).prepare(task, "}\n").job.run_limits
    assert (limits.cpu_s, limits.wall_s, limits.memory_mb) == (1.5, 3.0, 128)
    default = Scorer(pool=None).prepare(replace(task, time_limit_s=None, memory_mb=None), "}\n").job.run_limits
    assert (default.cpu_s, default.memory_mb) == (5.0, 512)


def test_a_task_the_harness_cannot_assemble_is_one_unscored_sample():
    from rewards.scorer import TASK_ERROR, Scorer

    class NoSandbox:
        def run_batch(self, jobs, progress=False):
            assert not jobs
            return []

    broken = Task(task_id="t", kind="function", prompt="struct S {\n  int f() {\n", tests="int main() { assert(1); }")
    (s,) = Scorer(NoSandbox()).score([(broken, "return 1; }\n};\n")])
    assert (s.verdict, s.reward) == (TASK_ERROR, None) and "define it after the class" in s.detail


def test_the_summary_averages_a_component_only_some_samples_have_as_zero_for_the_others():
    from rewards.__main__ import summarize
    from rewards.types import ScoredSample

    first_try = ScoredSample("t", "a", True, "OK", 1, 1, 7.0, {"compile": 1.0, "tests": 6.0})
    revised = ScoredSample("u", "b", True, "OK", 1, 1, 6.3, {"compile": 1.0, "tests": 6.0, "revision": -0.7})
    assert summarize([first_try, revised])["reward_components"] == {"compile": 1.0, "tests": 6.0, "revision": -0.35}
