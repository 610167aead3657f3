"""Evaluations during pretraining: validation bits-per-byte, FIM exact-match on held-out middles, and the
compile rate of sampled completions (compiled by g++ in the sandbox).

Under FSDP2 every rank must run the same forwards, so all ranks call these with identical inputs; BPB splits
the validation windows across ranks and sums. Sampling runs under a forked RNG so evaluation never changes the
training run's random state (exact resume does not depend on when evals happened).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.distributed as dist

from configs.base import TaskSplit
from pretrain.fim import FimSpecials, fim_sequence


def bits_per_byte(loss_nats_sum: float, target_bytes: int) -> float:
    """Sum of token losses (nats) over the UTF-8 bytes of the target tokens, in bits. Special tokens have zero
    bytes, so EOS/FIM predictions cost bits but add no bytes, as in nanochat's BPB."""
    return loss_nats_sum / (math.log(2) * max(1, target_bytes))


@torch.no_grad()
def validation_bpb(model, loader, num_windows: int, token_bytes: torch.Tensor, model_inputs,
                   device: torch.device | str = "cpu") -> dict[str, float]:
    """`loader` yields plain (no FIM) validation windows for this rank; `num_windows` is this rank's share;
    `model_inputs(batch)` makes the forward's keyword arguments (device placement, packed masks). The caller
    holds the training autocast. Sums are accumulated on `device`, the one the process group's collectives
    run on."""
    from pretrain.loss import token_losses

    model.eval()
    token_bytes = token_bytes.to(device)
    nats = torch.zeros((), dtype=torch.float64, device=device)
    num_bytes = torch.zeros((), dtype=torch.int64, device=device)
    tokens = torch.zeros((), dtype=torch.int64, device=device)
    done = 0
    while done < num_windows:
        batch = loader.next_batch()
        labels = batch["labels"].to(device).flatten()
        losses = token_losses(model, model, model_inputs(batch), labels)
        mask = labels != -100
        nats += losses[mask].double().sum()
        num_bytes += token_bytes[labels[mask]].sum()
        tokens += mask.sum()
        done += len(batch["labels"])
    if dist.is_initialized():
        for t in (nats, num_bytes, tokens):
            dist.all_reduce(t)
    model.train()
    return {"val/bpb": bits_per_byte(nats.item(), int(num_bytes)), "val/loss": nats.item() / max(1, int(tokens)),
            "val/tokens": int(tokens)}


@dataclass(frozen=True)
class FimExample:
    prefix: str
    middle: str
    suffix: str


def fim_examples(texts: list[str], count: int, seed: int = 0) -> list[FimExample]:
    """One whole non-blank line as the middle of each document (single-line infilling, as in the FIM paper's
    and SantaCoder's evals), chosen with a fixed seed so every evaluation asks the same questions."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        lines = text.splitlines(keepends=True)
        candidates = [i for i in range(1, len(lines) - 1) if len(lines[i].strip()) >= 3]
        if not candidates:
            continue
        i = rng.choice(candidates)
        out.append(FimExample("".join(lines[:i]), lines[i], "".join(lines[i + 1:])))
        if len(out) == count:
            break
    return out


@torch.no_grad()
def fim_exact_match(model, tokenizer, examples: list[FimExample], sp: FimSpecials, context: int,
                    device) -> dict[str, float]:
    """Greedy PSM infilling; a hit means the generated middle equals the held-out line (trailing space aside)."""
    if not examples:
        return {}
    model.eval()
    hits = 0
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    for ex in examples:
        middle_ids = encode(ex.middle)
        budget = context - len(middle_ids) - 16
        prefix, suffix = encode(ex.prefix)[-budget // 2:], encode(ex.suffix)[: budget // 2]
        prompt = fim_sequence(prefix, [], suffix, sp, spm=False)[:-1]  # drop the trailing EOS: generate it
        ids = torch.tensor([prompt], device=device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(middle_ids) + 8,
                             do_sample=False, eos_token_id=sp.eos, pad_token_id=sp.eos, use_cache=True)
        text = tokenizer.decode(out[0, len(prompt):].tolist(), skip_special_tokens=True)
        hits += text.rstrip() == ex.middle.rstrip()
    model.train()
    return {"eval/fim_exact_match": hits / len(examples), "eval/fim_examples": len(examples)}


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list[str], samples: int, max_new_tokens: int,
                       temperature: float, seed: int, device) -> list[list[str]]:
    model.eval()
    outs = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for prompt in prompts:
            ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=device)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens,
                                 num_return_sequences=samples, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.eos_token_id, use_cache=True)
            outs.append([tokenizer.decode(g[ids.shape[1]:].tolist(), skip_special_tokens=True) for g in gen])
    model.train()
    return outs


def complete_definition(task, text: str) -> str:
    """A base model's continuation up to and including the end of the definition the prompt opened (the
    first closing brace at column 0): what follows is a free-running continuation of the file, not the answer.
    A task with its own ending rule (stop strings, HumanEval-X's closing brace) is cut as the scorer cuts it."""
    if task.stop_tokens or task.finish != "stop":
        from rewards.extract import completion_of

        return completion_of(text, "raw", task.stop_tokens, task.finish)
    stops = ("\n};\n",) if task.kind == "compile" else ("\n}\n",)
    ends = [text.find(s) + len(s) for s in stops if s and s in text]
    return text[: min(ends)] if ends else text


def compile_rate(tasks, completions: list[list[str]], backend: str) -> dict[str, float]:
    """Share of sampled completions whose whole file compiles (g++ -c in the sandbox: no linking, no run)."""
    from rewards.scorer import solution_source
    from sandbox import SandboxConfig, SandboxPool
    from sandbox.types import Job, Verdict

    jobs = []
    for task, outs in zip(tasks, completions):
        for text in outs:
            source, _ = solution_source(task, complete_definition(task, text), "raw")
            jobs.append(Job({"solution.cpp": source}, flags=(*task.flags, "-c"), tests=(), compile_only=True))
    with SandboxPool(SandboxConfig(backend=backend, num_workers=1)) as pool:
        results = pool.run_batch(jobs)
    verdicts = [r.verdict for r in results]
    errors = sum(v is Verdict.SANDBOX_ERROR for v in verdicts)
    ok = sum(v is Verdict.OK for v in verdicts)
    return {"eval/compile_rate": ok / max(1, len(verdicts) - errors), "eval/compile_samples": len(verdicts),
            "eval/sandbox_errors": errors}


def compile_eval_tasks(count: int, split: TaskSplit):
    """Held-out embedded tasks (the corpus builder leaves them out), in a fixed order."""
    from rewards.tasks import load_embedded

    tasks = sorted(split.split(load_embedded())[1], key=lambda t: t.task_id)
    return tasks[:count]
