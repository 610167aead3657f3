"""Sample builders, one per kind: whole files or line-bounded chunks (`file`), one definition each
(`granular`), question/answer facts in several phrasings (`qa`), bug-fix pairs mined from git history
(`bugfix`) and the embedded task set's reference solutions (`task`). Answers are built only from what the
code states (locations, signatures, doc comments, build files) — nothing is invented."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from sft.cpp_parse import Definition, extract_definitions
from sft.samples import Sample

CPP_SUFFIXES = (".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h", ".ipp", ".tpp", ".inl", ".tcc")
BUGFIX_WORDS = ("fix", "bug", "crash", "segfault", "leak", "overflow", "regression")
_CMAKE_TARGET = re.compile(r"\badd_(executable|library)\s*\(\s*([A-Za-z0-9_.+-]+)", re.IGNORECASE)
_MESON_TARGET = re.compile(r"\b(executable|(?:shared_|static_|both_)?library)\s*\(\s*'([^']+)'")
_MAKE_TARGET = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_./-]*)\s*:(?!=)", re.MULTILINE)


def file_samples(path: str, text: str, max_chars: int) -> list[Sample]:
    """The whole file when it fits in `max_chars`, else chunks cut at line boundaries (a single longer line
    is its own chunk)."""
    if len(text) <= max_chars:
        return [Sample("file", f"Show the contents of {path}", "", text, path)]
    chunks, current = [], ""
    for line in text.splitlines(keepends=True):
        if current and len(current) + len(line) > max_chars:
            chunks.append(current)
            current = ""
        current += line
    chunks.append(current)
    return [Sample("file", f"Write {path} (part {i} of {len(chunks)})", "", chunk, path, {"part": i})
            for i, chunk in enumerate(chunks, 1)]


def granular_samples(definitions: Iterable[Definition], max_chars: int) -> list[Sample]:
    """One sample per function, class/struct and enum no longer than `max_chars` (namespaces are covered
    by their contents)."""
    samples = []
    for d in definitions:
        if d.kind == "namespace" or len(d.text) > max_chars:
            continue
        if d.kind == "function":
            instruction = f"Implement the function `{d.signature}` from {d.path}"
        elif d.kind == "enum":
            instruction = f"Define the enum `{d.qualified_name}` from {d.path}"
        else:
            instruction = f"Write the {d.kind} `{d.qualified_name}` from {d.path}, with its methods"
        if d.doc:
            instruction += f"\n\nIts documentation: {d.doc}"
        samples.append(Sample("granular", instruction, "", d.text, d.path,
                              {"definition": d.qualified_name, "line": d.start_line}))
    return samples


def _qa(questions: list[str], answer: str, path: str, fact: str, num_phrasings: int) -> list[Sample]:
    return [Sample("qa", q, "", answer, path, {"fact": fact}) for q in questions[:num_phrasings]]


def _describe_function(d: Definition) -> str:
    if d.doc:
        return f"`{d.qualified_name}` (`{d.signature}`) is documented as follows:\n{d.doc}"
    params = "takes no parameters" if d.params in ("()", "(void)") else f"takes the parameters `{d.params}`"
    if d.return_type is None:
        returns = "has no declared return type (a constructor, destructor or conversion function)"
    elif d.return_type.split()[-1] == "void" and not d.return_type.endswith("*"):
        returns = "returns nothing"
    else:
        returns = f"returns `{d.return_type}`"
    return (f"`{d.qualified_name}` has no documentation; its signature is `{d.signature}`: it {params} "
            f"and {returns}.")


def qa_samples(definitions: Iterable[Definition], num_phrasings: int = 3) -> list[Sample]:
    """Facts per definition: where it is defined; for classes, their methods and bases; for functions (and
    documented classes), what they do — from the doc comment, else a description of the signature."""
    samples: list[Sample] = []
    for d in definitions:
        q, where = d.qualified_name, f"{d.path}:{d.start_line}"
        samples += _qa([f"Where is the {d.kind} `{q}` defined?", f"In which file and line is `{q}` defined?",
                        f"Where can I find the definition of `{q}`?", f"Locate `{q}` in the codebase."],
                       f"`{q}` is defined in {where}.", d.path, "location", num_phrasings)
        if d.kind in ("class", "struct") and d.methods:
            listing = ", ".join(f"`{m}`" for m in d.methods)
            samples += _qa([f"Which methods does the {d.kind} `{q}` have?",
                            f"List the member functions of `{q}`.", f"What methods does `{q}` declare?"],
                           f"`{q}` (defined in {where}) has the methods: {listing}.", d.path, "methods",
                           num_phrasings)
        if d.kind in ("class", "struct") and d.bases:
            samples += _qa([f"What does `{q}` inherit from?", f"What is the base class of `{q}`?",
                            f"Which classes does `{q}` derive from?"],
                           f"{q} inherits from {', '.join(d.bases)}.", d.path, "bases", num_phrasings)
        if d.kind == "enum" and d.enumerators:
            samples += _qa([f"What values does the enum `{q}` have?", f"List the enumerators of `{q}`.",
                            f"Which constants are defined by `{q}`?"],
                           f"`{q}` has the enumerators: {', '.join(f'`{e}`' for e in d.enumerators)}.",
                           d.path, "enumerators", num_phrasings)
        if d.kind == "function" or (d.kind in ("class", "struct") and d.doc):
            answer = (_describe_function(d) if d.kind == "function"
                      else f"`{q}` is documented as follows:\n{d.doc}")
            samples += _qa([f"What does the {d.kind} `{q}` do?", f"Explain what `{q}` does.",
                            f"Describe the purpose of `{q}`."], answer, d.path, "purpose", num_phrasings)
    return samples


def build_answer(files: dict[str, str]) -> tuple[str, str] | None:
    """(build file, how to build) from the top-level CMakeLists.txt, meson.build or Makefile, in that
    order of preference; None when there is none."""
    if "CMakeLists.txt" in files:
        targets = _CMAKE_TARGET.findall(files["CMakeLists.txt"])
        built = "; ".join(f"{kind.lower()} `{name}`" for kind, name in targets) or "the targets it declares"
        return "CMakeLists.txt", ("The project builds with CMake (CMakeLists.txt):\n"
                                  "cmake -S . -B build\ncmake --build build\n"
                                  f"This builds: {built}.")
    if "meson.build" in files:
        targets = _MESON_TARGET.findall(files["meson.build"])
        built = "; ".join(f"{kind} `{name}`" for kind, name in targets) or "the targets it declares"
        return "meson.build", ("The project builds with Meson and Ninja (meson.build):\n"
                               f"meson setup build\nninja -C build\nThis builds: {built}.")
    for name in ("Makefile", "makefile", "GNUmakefile"):
        if name in files:
            targets = [t for t in dict.fromkeys(_MAKE_TARGET.findall(files[name])) if not t.startswith(".")]
            default = f" (the default target is `{targets[0]}`)" if targets else ""
            others = f"; targets: {', '.join(f'`{t}`' for t in targets)}" if targets else ""
            return name, f"The project builds with make ({name}):\nmake{default}{others}."
    return None


def build_qa_samples(files: dict[str, str], num_phrasings: int = 3) -> list[Sample]:
    """How to build the project, from its top-level build file (`files`: relative path -> text)."""
    found = build_answer(files)
    if found is None:
        return []
    path, answer = found
    return _qa(["How do I build this project?", "What are the commands to compile this project?",
                "How can I build the code in this repository?"], answer, path, "build", num_phrasings)


def _git(repo: Path, *args: str) -> str | None:
    done = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(repo), *args], capture_output=True)
    return None if done.returncode else done.stdout.decode("utf-8", errors="replace")


def _functions_by_name(source: str, path: str) -> dict[str, Definition]:
    functions = [d for d in extract_definitions(source, path) if d.kind == "function"]
    counts = Counter(d.qualified_name for d in functions)
    # Overloads are ambiguous: which old one became which new one is not known.
    return {d.qualified_name: d for d in functions if counts[d.qualified_name] == 1}


def bugfix_samples(repo: Path, max_commits: int | None = None) -> list[Sample]:
    """Pairs (function before, function after) from non-merge, non-root commits whose message mentions a
    fix; functions are paired by qualified name (ambiguous overloads are skipped), kept when their text
    changed."""
    grep = [f"--grep={word}" for word in BUGFIX_WORDS]
    log = _git(repo, "log", "--no-merges", "-i", *grep, "--format=%H%x1f%P%x1f%s%x1f%b%x1e")
    if log is None:
        raise ValueError(f"{repo}: git log failed (not a git repository with commits?)")
    samples: list[Sample] = []
    for record in [r for r in log.split("\x1e") if r.strip()][:max_commits]:
        commit, parents, subject, body = (record.strip("\n").split("\x1f") + ["", "", "", ""])[:4]
        if len(parents.split()) != 1:
            continue  # root commit (nothing before it) or merge
        changed = _git(repo, "diff", "--name-only", "--no-renames", f"{commit}^", commit) or ""
        message = (subject.strip() + ("\n" + body.strip() if body.strip() else "")).replace("*/", "* /")
        for path in changed.splitlines():
            if not path.lower().endswith(CPP_SUFFIXES):
                continue
            before, after = _git(repo, "show", f"{commit}^:{path}"), _git(repo, "show", f"{commit}:{path}")
            if before is None or after is None:
                continue  # added or deleted file
            old, new = _functions_by_name(before, path), _functions_by_name(after, path)
            for name in sorted(old.keys() & new.keys()):
                if old[name].text == new[name].text:
                    continue
                samples.append(Sample("bugfix", "Fix the bug in this function", old[name].text,
                                      f"/* REASONING: {message} */\n{new[name].text}", path,
                                      {"commit": commit, "function": name}))
    return samples


def repair_samples(tasks: Iterable) -> list[Sample]:
    """Repair tasks (rewards.repair): bug + debug state -> `/* REASONING */` + the fix, the design's format."""
    return [Sample("repair", t.prompt, "", t.reference, f"tasks/{t.task_id}", {"task_id": t.task_id})
            for t in tasks if t.reference and getattr(t, "kind", None) == "repair"]


def task_samples(tasks: Iterable) -> list[Sample]:
    """Prompt -> reference solution for every task that has a reference (`rewards.types.Task`)."""
    return [Sample("task", t.prompt, "", t.reference, f"tasks/{t.task_id}", {"task_id": t.task_id})
            for t in tasks if t.reference and getattr(t, "kind", None) != "repair"]
