"""Command line: score completions of C++ tasks in the sandbox. The last stdout line is one JSON summary.

    python -m rewards eval  --tasks PATH --completions PATH|canonical [--backend docker|bwrap] [--out FILE]
    python -m rewards score --tasks PATH --completions PATH   # GRPO batches: reward mean/std per group
    python -m rewards explain --tasks PATH --task-id ID --completion FILE   # one sample, everything shown
    python -m rewards validate --tasks PATH   # a task file: schema, references pass, a wrong body fails
    python -m rewards repair --tasks PATH|embedded --out repair.jsonl [--sft-out sft.jsonl]   # synthetic bugs
    python -m rewards families --out proc.jsonl [--per-level 20] [--seed 0]   # procedural tasks, 4 levels
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

from configs.loader import cli_error, jsonl_rows, run_cli
from rewards.declarations import scan_braces
from rewards.extract import completion_of
from rewards.passk import available_ks, mean_pass_at_k
from rewards.reward import RewardConfig
from rewards.scorer import MAX_COMPLETION_BYTES, TASK_ERROR
from rewards.tasks import FINAL_SIGNATURE, TaskFile, load_embedded, load_task_file
from rewards.types import ScoredSample, Task
from sandbox.types import Verdict


def read_completions(path: Path, tasks: dict[str, Task], mode: str = "raw") -> list[tuple[Task, str]]:
    """Rows {task_id, completion}; a completion over the size limit once extracted (trailing text after a
    HumanEval-X function is dropped first) is refused with its line."""
    items = []
    for lineno, row in jsonl_rows(path):
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), str):
            raise ValueError(f"{path}:{lineno}: field 'task_id' is missing or not a string")
        if not isinstance(row.get("completion"), str):
            raise ValueError(f"{path}:{lineno}: field 'completion' is missing or not a string")
        task = tasks.get(row["task_id"])
        size = len(completion_of(row["completion"], mode, task.stop_tokens, task.finish).encode()) if task else 0
        if size > MAX_COMPLETION_BYTES:
            raise ValueError(f"{path}:{lineno}: field 'completion' is {size} bytes, "
                             f"over the {MAX_COMPLETION_BYTES}-byte limit")
        if row["task_id"] not in tasks:
            raise ValueError(f"{path}:{lineno}: task_id {row['task_id']!r} is not in the task file")
        items.append((tasks[row["task_id"]], row["completion"]))
    if not items:
        raise ValueError(f"{path}: no completions")
    return items


def summarize(scored: list[ScoredSample]) -> dict:
    """pass@k (unbiased) over tasks, verdict counts, reward mean; sandbox failures excluded and counted."""
    usable = [s for s in scored if s.reward is not None]
    per_task: dict[str, list[bool]] = defaultdict(list)
    for s in usable:
        per_task[s.task_id].append(s.passed)
    counts = [(len(v), sum(v)) for v in per_task.values()]
    summary: dict = {
        "samples": len(scored), "scored": len(usable),
        "sandbox_errors": sum(s.verdict == Verdict.SANDBOX_ERROR.value for s in scored),
        "task_errors": sum(s.verdict == TASK_ERROR for s in scored),
        "tasks": len(per_task), "passed": sum(s.passed for s in usable),
        "verdicts": dict(Counter(s.verdict for s in scored)),
        "reward_mean": round(statistics.fmean([s.reward for s in usable]), 4) if usable else None,
    }
    if any(s.sanitizer is not None for s in scored):
        summary["sanitizer_findings"] = dict(Counter(s.sanitizer["kind"] for s in scored if s.sanitizer))
    for k in available_ks(n for n, _ in counts):
        summary[f"pass@{k}"] = round(mean_pass_at_k(counts, k), 4)
    if usable:  # a component some samples lack (a revised trajectory's `revision`) counts 0 for the others
        components = dict.fromkeys(c for s in usable for c in s.components)
        summary["reward_components"] = {c: round(statistics.fmean(s.components.get(c, 0.0) for s in usable), 4)
                                        for c in components}
    return summary


def group_stats(scored: list[ScoredSample]) -> list[dict]:
    groups: dict[str, list[ScoredSample]] = defaultdict(list)
    for s in scored:
        groups[s.task_id].append(s)
    out = []
    for task_id, samples in groups.items():
        rewards = [s.reward for s in samples if s.reward is not None]
        out.append({"task_id": task_id, "n": len(samples),
                    "reward_mean": round(statistics.fmean(rewards), 4) if rewards else None,
                    "reward_std": round(statistics.pstdev(rewards), 4) if rewards else None,
                    "pass_rate": round(sum(s.passed for s in samples) / len(samples), 4)})
    return out


def _numbered(text: str) -> str:
    return "\n".join(f"{i:4} | {line}" for i, line in enumerate(text.splitlines(), 1))


def explain(task: Task, text: str, backend: str, mode: str, sanitize: bool = False) -> int:
    """Print the assembled sources, the compiler's output, each assert's or case's result and the reward."""
    from rewards.harness import verify
    from rewards.scorer import Scorer
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool

    with SandboxPool(SandboxConfig(backend=backend, num_workers=1)) as pool:
        prep, result, scored = Scorer(pool, RewardConfig(sanitize=sanitize), mode=mode).explain(task, text)
    for name, source in sorted(prep.job.files.items()):
        where = f" (the completion starts at line {prep.first_line})" if name == "solution.cpp" else ""
        print(f"===== {name}{where}")
        print(_numbered(source))
    print(f"===== compiler: g++ {' '.join(prep.job.build_flags)}")
    print((result.compile.stdout + result.compile.stderr).strip() if result.compile else "(not run)")
    print("===== tests")
    if prep.assembled is not None and result.tests:
        report = verify(result.tests[0].stdout, prep.secret, prep.assembled.num_sites)
        for site, line in enumerate(prep.assembled.site_lines, 1):
            state = ("FAIL" if site in report.failed_sites
                     else "not reached" if site in report.unreached_sites else "pass")
            print(f"  assert #{site:<3} {state:<11} {line}")
        print(f"  ran to the end: {report.completed}")
    for i, (case, run) in enumerate(zip(task.cases, result.tests), 1):
        print(f"  case {i}: {run.verdict.value} {run.detail}\n    input    {case.input!r}\n"
              f"    expected {case.output!r}\n    got      {run.stdout!r}")
    if result.tests and result.tests[0].stderr.strip():
        print(f"  stderr: {result.tests[0].stderr.strip()[:2000]}")
    print(f"===== verdict {scored.verdict}: {scored.detail}")
    print("===== reward " + ", ".join(f"{k} {v:+g}" for k, v in scored.components.items()) + f" = {scored.reward}")
    print(json.dumps(scored.to_json()))
    return 0


def probe_completion(task: Task) -> str | None:
    """A wrong answer that compiles: a function returning a value-initialised result (`return {};`; nothing
    for `void`, 0 for a deduced type), a program that prints nothing. None for compile-only tasks."""
    if task.kind == "compile":
        return None
    if task.kind == "stdio":
        return "    return 0;\n}\n"
    head = (FINAL_SIGNATURE.search(task.prompt.rstrip()) or [""])[0]
    name = rf"(?:\w+::)*{re.escape(task.entry_point)}\b"
    body = ("" if re.search(rf"\bvoid\s+{name}", head)
            else "    return 0;" if re.search(rf"\b(?:auto|decltype\(auto\))\s+{name}", head)  # nothing to
            # value-initialise
            else "    return {};")
    # Close the function, unless the format's suffix does, and any namespace the prompt left open.
    closing = "" if "}" in task.completion_suffix else "}\n"
    return f"{body}\n{closing}" + "}\n" * (scan_braces(task.prompt, stop_at_zero=False).depth - 1)


def judge_task(task: Task, reference: ScoredSample | None, probe: ScoredSample | None) -> tuple[str, str, str]:
    """(status, reference column, probe column) of one task for `validate`: status "ok", "warn" (the probe
    did not compile, so the tests' power is unknown; the sandbox failed) or "error" (the reference fails,
    the probe passes, the harness cannot assemble the task)."""
    infrastructure = [s for s in (reference, probe) if s is not None and s.reward is None]
    if infrastructure:  # a sandbox failure (or a task the harness cannot assemble) decides nothing here
        return ("error" if infrastructure[0].verdict == TASK_ERROR else "warn",
                "inconclusive" if reference in infrastructure else ("no reference" if reference is None else "pass"
                                                                     if reference.passed else "FAIL"),
                f"inconclusive ({infrastructure[0].verdict}: {infrastructure[0].detail[:80]})")
    ref = ("no reference" if reference is None else "pass" if reference.passed
           else f"FAIL {reference.verdict}: {reference.detail[:120]}")
    if probe is None:
        wrong = "n/a (compile-only)"
    elif probe.passed:
        wrong = "PASSES: the tests accept a wrong answer"
    elif probe.verdict == Verdict.COMPILE_ERROR.value:
        wrong = f"inconclusive (does not compile: {probe.detail[:80]})"
    else:
        wrong = f"fails ({probe.verdict}, {probe.tests_passed}/{probe.tests_total})"
    status = ("error" if (reference is not None and not reference.passed) or (probe is not None and probe.passed)
              else "warn" if probe is not None and probe.verdict == Verdict.COMPILE_ERROR.value
              else "warn" if reference is None else "ok")
    return status, ref, wrong


def validate(loaded: TaskFile, backend: str, workers: int | None) -> int:
    """Check a task file: every record against the schema (all problems listed, not the first), each
    reference passes in the sandbox, and a wrong answer (probe_completion) fails. Prints a table."""
    from rewards.scorer import Scorer
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool

    tasks = loaded.tasks
    items, slots = [], []
    for task in tasks:
        for text in (task.reference, probe_completion(task)):
            slots.append(len(items) if text is not None else None)
            if text is not None:
                items.append((replace(task, stop_tokens=()), text))
    cfg = SandboxConfig(backend=backend, **({"num_workers": workers} if workers else {}))
    with SandboxPool(cfg) as pool:
        scored = Scorer(pool).score(items, progress=True)
    rows, counts = [], Counter()
    for i, task in enumerate(tasks):
        ref, probe = (scored[j] if j is not None else None for j in slots[2 * i: 2 * i + 2])
        status, ref_text, probe_text = judge_task(task, ref, probe)
        counts[status] += 1
        rows.append((status, task.task_id, task.kind, ref_text, probe_text))
    width = max([len(r[1]) for r in rows] + [7])
    print(f"{'status':<7} {'task_id':<{width}} {'kind':<9} {'reference':<28} wrong-answer probe")
    for status, task_id, kind, ref_text, probe_text in rows:
        print(f"{status:<7} {task_id:<{width}} {kind:<9} {ref_text:<28} {probe_text}")
    for why in loaded.skipped:
        print(f"{'error':<7} {why}")
    summary = {"tasks": len(tasks) + len(loaded.skipped), "ok": counts["ok"], "warn": counts["warn"],
               "error": counts["error"] + len(loaded.skipped), "invalid": len(loaded.skipped)}
    print(json.dumps(summary))
    return 1 if summary["error"] else 0


def families(args) -> int:
    """Write procedural tasks (rewards.families) as rows of our task format; print one JSON summary."""
    from rewards.families import FAMILIES, LEVELS, generate
    from rewards.families import task_row as family_row

    if not args.out:
        return cli_error("families needs --out (the tasks' JSONL)", 2)
    names = args.families or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    levels = args.levels if args.levels is not None else list(range(LEVELS))
    if unknown or any(not 0 <= level < LEVELS for level in levels):
        return cli_error(f"unknown families {unknown} (known: {list(FAMILIES)}) or levels outside 0..{LEVELS - 1}", 2)
    tasks = list(generate(names, levels, args.per_level, args.seed))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for t in tasks:
            f.write(json.dumps(family_row(t)) + "\n")
    print(json.dumps({"tasks": len(tasks), "by_family": dict(Counter(t.source.split(":")[1] for t in tasks)),
                      "by_level": dict(Counter(t.tier for t in tasks)), "out": args.out}))
    return 0


def repair(tasks: list[Task], args) -> int:
    """Build repair tasks from synthetic bugs in the tasks' references (rewards.repair); write them as task
    rows (and SFT samples); print one JSON summary."""
    from configs.base import TaskSplit
    from rewards.repair import build_repair_cases, task_row
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool

    split = TaskSplit()
    used = [t for t in tasks if args.include_heldout or not split.is_heldout(t.task_id)]
    cfg = SandboxConfig(backend=args.backend, **({"num_workers": args.workers} if args.workers else {}))
    with SandboxPool(cfg) as pool:
        cases, counts = build_repair_cases(used, pool, per_task=args.per_task, tries_per_task=args.tries_per_task,
                                           seed=args.seed, sanitize=True, progress=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for case in cases:
            f.write(json.dumps(task_row(case)) + "\n")
    if args.sft_out:
        from sft.builders import repair_samples

        Path(args.sft_out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.sft_out, "w") as f:
            for sample in repair_samples(case.task for case in cases):
                f.write(json.dumps(sample.to_alpaca()) + "\n")
    print(json.dumps({"tasks": len(used), "heldout_skipped": len(tasks) - len(used),
                      "reference_fails": counts["reference_fails"], "mutants": counts["tried"],
                      "kept": len(cases), "by_operator": {k.split("/", 1)[1]: v for k, v in sorted(counts.items())
                                                          if k.startswith("kept/")},
                      "still_pass": sum(v for k, v in counts.items() if k.startswith("still_passes/")),
                      "out": args.out, **({"sft_out": args.sft_out} if args.sft_out else {})}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rewards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["eval", "score", "explain", "validate", "repair", "families"])
    parser.add_argument("--tasks", help="task file (HumanEval-X, MultiPL-E, ours) or 'embedded' (every command "
                                        "but families)")
    parser.add_argument("--completions", help="eval/score: JSONL of {task_id, completion}, or 'canonical'")
    parser.add_argument("--task-id", help="explain: the task")
    parser.add_argument("--completion", help="explain: a file holding the raw completion, or 'canonical'")
    parser.add_argument("--backend", default="docker", choices=["docker", "bwrap"])
    parser.add_argument("--workers", type=int, default=None, help="sandbox workers (default: one per core)")
    parser.add_argument("--mode", default="raw", choices=["raw", "chat"], help="completion extraction")
    parser.add_argument("--out", help="write one JSON line per completion, in input order")
    parser.add_argument("--sanitize", action="store_true",
                        help="compile and run under AddressSanitizer + UBSan: a finding fails the run and costs the "
                             "`sanitizer` reward component (reward.weights.sanitize in RLVR configs)")
    parser.add_argument("--per-level", type=int, default=20, help="families: instances per family and level")
    parser.add_argument("--families", nargs="+", default=None, help="families: which (default: all)")
    parser.add_argument("--levels", nargs="+", type=int, default=None, help="families: which levels (default: all)")
    parser.add_argument("--per-task", type=int, default=2, help="repair: repair tasks kept per task")
    parser.add_argument("--tries-per-task", type=int, default=8, help="repair: mutants tried per task")
    parser.add_argument("--seed", type=int, default=0, help="repair: which mutants are tried; families: which "
                                                                 "instances are drawn")
    parser.add_argument("--sft-out", help="repair: also write the cases as SFT samples (alpaca JSONL)")
    parser.add_argument("--include-heldout", action="store_true",
                        help="repair: also use tasks the default split holds out for evaluation (their repair "
                             "tasks are held out too: configs.base.TaskSplit)")
    parser.add_argument("--lenient", action="store_true",
                        help="skip task records that do not validate (counted and listed) instead of stopping")
    args = parser.parse_args(argv)

    from rewards.scorer import Scorer, canonical_items
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool
    from sandbox.worker import WorkerError

    if args.command == "families":
        return families(args)
    if not args.tasks:
        return cli_error(f"{args.command} needs --tasks", 2)
    try:
        loaded = TaskFile(load_embedded()) if args.tasks == "embedded" else load_task_file(
            args.tasks, lenient=args.lenient or args.command == "validate")
        tasks = loaded.tasks
        for why in loaded.skipped if args.command != "validate" else ():
            print(f"skipped: {why}", file=sys.stderr)
        by_id = {t.task_id: t for t in tasks}
        if args.command == "validate":
            return validate(loaded, args.backend, args.workers)
        if args.command == "explain":
            if not args.task_id or not args.completion:
                raise ValueError("explain needs --task-id and --completion")
            if args.task_id not in by_id:
                raise ValueError(f"task_id {args.task_id!r} is not in {args.tasks}")
            task = by_id[args.task_id]
            if args.completion == "canonical":
                (task, text), = canonical_items([task])
            else:
                text = Path(args.completion).read_text()
            return explain(task, text, args.backend, args.mode, args.sanitize)
        if args.command == "repair":
            if not args.out:
                raise ValueError("repair needs --out (the repair tasks' JSONL)")
            return repair(tasks, args)
        if not args.completions:
            raise ValueError(f"{args.command} needs --completions")
        items = canonical_items(tasks) if args.completions == "canonical" else read_completions(
            Path(args.completions), by_id, args.mode)
    except (OSError, ValueError) as exc:
        return cli_error(str(exc), 2)
    except WorkerError as exc:  # validate's sandbox
        return cli_error(f"sandbox unavailable: {exc}", 3)
    cfg = SandboxConfig(backend=args.backend, **({"num_workers": args.workers} if args.workers else {}))
    try:
        with SandboxPool(cfg) as pool:
            scored = Scorer(pool, RewardConfig(sanitize=args.sanitize), mode=args.mode).score(items, progress=True)
    except WorkerError as exc:
        return cli_error(f"sandbox unavailable: {exc}", 3)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            for i, s in enumerate(scored):  # input order: `index` is the completion's row among them
                f.write(json.dumps({"index": i, **s.to_json(), "completion": s.completion}) + "\n")
    summary = summarize(scored)
    if loaded.skipped:
        summary["tasks_skipped"] = len(loaded.skipped)
    if args.command == "score":
        groups = group_stats(scored)
        for g in groups:
            print(f"{g['task_id']:<40} n={g['n']:<3} reward {g['reward_mean']} +- {g['reward_std']}"
                  f"  pass {g['pass_rate']}")
        summary["groups"] = len(groups)
        summary["group_reward_std_mean"] = round(statistics.fmean(
            g["reward_std"] for g in groups if g["reward_std"] is not None), 4) if groups else None
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
