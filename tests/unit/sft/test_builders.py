from types import SimpleNamespace

from sft.builders import (bugfix_samples, build_qa_samples, file_samples, granular_samples, qa_samples,
                          task_samples)
from sft.cpp_parse import extract_definitions
from tests.unit.sft.conftest import CMAKE, SHAPES_CPP, SHAPES_H, SUM_BUGGY, SUM_FIXED


def _qa(path: str, source: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in qa_samples(extract_definitions(source, path), num_phrasings=3):
        out.setdefault(s.output, []).append(s.instruction)
    return out


def test_file_samples_whole_and_chunked():
    text = "".join(f"line {i}\n" for i in range(10))  # 7 chars a line
    (whole,) = file_samples("a.cpp", text, max_chars=1000)
    assert (whole.kind, whole.instruction, whole.output, whole.source_file) == (
        "file", "Show the contents of a.cpp", text, "a.cpp")
    parts = file_samples("a.cpp", text, max_chars=21)
    assert [p.instruction for p in parts] == [f"Write a.cpp (part {i} of 4)" for i in range(1, 5)]
    assert [p.output for p in parts][0] == "line 0\nline 1\nline 2\n"
    assert "".join(p.output for p in parts) == text


def test_granular_samples():
    samples = granular_samples(extract_definitions(SHAPES_CPP, "shapes.cpp"), max_chars=1000)
    assert [s.instruction for s in samples] == [
        "Implement the function `double Circle::area() const` from shapes.cpp",
        "Implement the function `int sum(const std::vector<int>& v, int n)` from shapes.cpp"
        "\n\nIts documentation: Sum of the first n elements of v."]
    assert samples[1].output == SUM_BUGGY
    classes = granular_samples(extract_definitions(SHAPES_H, "shapes.h"), max_chars=1000)
    circle = next(s for s in classes if "`geo::Circle`" in s.instruction)
    assert circle.instruction == "Write the class `geo::Circle` from shapes.h, with its methods"
    assert circle.output.startswith("class Circle : public Shape {") and circle.output.endswith("}")
    assert not granular_samples(extract_definitions(SHAPES_H, "shapes.h"), max_chars=10)


def test_qa_answers_from_the_code():
    answers = _qa("shapes.h", SHAPES_H)
    assert answers["geo::Circle inherits from Shape."] == [
        "What does `geo::Circle` inherit from?", "What is the base class of `geo::Circle`?",
        "Which classes does `geo::Circle` derive from?"]
    methods = "`geo::Shape` (defined in shapes.h:8) has the methods: `~Shape`, `area`, `name`."
    assert len(answers[methods]) == 3
    assert len(answers["`geo::Shape::name` is defined in shapes.h:12."]) == 3
    assert "`geo::Color` has the enumerators: `Red`, `Green`, `Blue`." in answers
    assert ("`geo::maxof` has no documentation; its signature is `template <typename T> T maxof(T a, T b)`: "
            "it takes the parameters `(T a, T b)` and returns `T`.") in answers
    assert not any("Shape inherits" in a for a in answers)  # Shape has no base
    documented = _qa("shapes.cpp", SHAPES_CPP)
    assert documented["`geo::sum` (`int sum(const std::vector<int>& v, int n)`) is documented as follows:\n"
                      "Sum of the first n elements of v."] == [
        "What does the function `geo::sum` do?", "Explain what `geo::sum` does.",
        "Describe the purpose of `geo::sum`."]


def test_qa_phrasings_limit():
    one = qa_samples(extract_definitions(SHAPES_H, "shapes.h"), num_phrasings=1)
    assert len({s.output for s in one}) == len(one)


def test_build_qa():
    samples = build_qa_samples({"CMakeLists.txt": CMAKE})
    assert len(samples) == 3 and len({s.instruction for s in samples}) == 3
    assert samples[0].source_file == "CMakeLists.txt"
    assert "cmake -S . -B build" in samples[0].output and "executable `app`" in samples[0].output
    makefile = "CC=g++\nall: app\napp: main.o\n\t$(CC) -o app main.o\n.PHONY: all\n"
    (make,) = build_qa_samples({"Makefile": makefile}, num_phrasings=1)
    assert "default target is `all`" in make.output and "`app`" in make.output and ".PHONY" not in make.output
    (meson,) = build_qa_samples({"meson.build": "project('p', 'cpp')\nexecutable('tool', 'main.cpp')\n"}, 1)
    assert "meson setup build" in meson.output and "executable `tool`" in meson.output
    assert build_qa_samples({"README.md": "hi"}) == []


def test_exactly_one_bugfix_pair(cpp_repo):
    (pair,) = bugfix_samples(cpp_repo)
    assert (pair.kind, pair.instruction, pair.source_file) == (
        "bugfix", "Fix the bug in this function", "shapes.cpp")
    assert pair.input == SUM_BUGGY
    assert pair.output == "/* REASONING: Fix off-by-one in sum */\n" + SUM_FIXED
    assert pair.meta["function"] == "geo::sum"


def test_repair_tasks_become_repair_samples_only():
    from sft.builders import repair_samples

    tasks = [SimpleNamespace(task_id="a/repair-1", kind="repair", prompt="// TASK: Fix ...",
                             reference="/* REASONING: x */\nint f() { return 1; }\n"),
             SimpleNamespace(task_id="a", kind="function", prompt="int f() {", reference="return 1;\n}")]
    (repair,) = repair_samples(tasks)
    assert (repair.kind, repair.instruction, repair.source_file) == ("repair", "// TASK: Fix ...", "tasks/a/repair-1")
    assert [s.kind for s in task_samples(tasks)] == ["task"]


def test_task_samples_skip_missing_reference():
    tasks = [SimpleNamespace(task_id="a", prompt="int f() {", reference="return 1;\n}"),
             SimpleNamespace(task_id="b", prompt="int g() {", reference=None)]
    (sample,) = task_samples(tasks)
    assert (sample.kind, sample.instruction, sample.output, sample.source_file) == (
        "task", "int f() {", "return 1;\n}", "tasks/a")
