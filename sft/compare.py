"""`compare`: base vs tuned, side by side. Greedy answers to a question file (written as JSONL and a Markdown
table) and the pass rate of each model on a task file, scored by the rewards evaluator in the sandbox.

Prompts go through each model's chat template (the built-in one for base models that lack it), exactly as
SFT formatted them, or are given as plain text when SFT ran with `model.chat_template=none`; task completions are scored in raw mode (a continuation of the task's prompt)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from configs.base import TaskSplit
from configs.loader import jsonl_rows


def read_questions(path: Path, limit: int | None = None) -> list[str]:
    """A .txt file (one question per line) or JSONL rows with `question`, `instruction`, `prompt` or chat
    `messages` (the user turns before the last assistant reply)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no question file")
    if path.suffix != ".jsonl":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:limit]
    questions = []
    for lineno, row in jsonl_rows(path):
        if "messages" in row:
            users = [m["content"] for m in row["messages"] if m.get("role") == "user"]
            text = users[-1] if users else None
        else:
            text = next((row[k] for k in ("question", "instruction", "prompt") if isinstance(row.get(k), str)),
                        None)
            if text is not None and row.get("input"):
                text += "\n\n" + row["input"]
        if not text:
            raise ValueError(f"{path}:{lineno}: needs `question`, `instruction`, `prompt` or `messages`")
        questions.append(text)
        if limit and len(questions) >= limit:
            break
    return questions


def inference_placement(cuda_available: bool) -> tuple[torch.device, torch.dtype]:
    """Where and in what dtype `compare` runs the models: bf16 on the GPU (what they were trained in there,
    half the memory, tensor-core speed), fp32 on CPU (whose bf16 matmuls are slow and, with no training dtype
    to match, only lose precision)."""
    if cuda_available:
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def load_model(path: str, placement: tuple[torch.device, torch.dtype] | None = None):
    """A plain HF checkpoint, or a LoRA adapter directory (loaded on its base), placed per
    `inference_placement` unless `placement` is given."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sft.model import ensure_chat_template

    device, dtype = placement or inference_placement(torch.cuda.is_available())
    if (Path(path) / "adapter_config.json").exists():
        from peft import PeftModel

        from sft.merge import adapter_base

        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(adapter_base(Path(path)), dtype=dtype), path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tokenizer, "auto")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def model_device(model) -> torch.device:
    """The device of the model's (first) parameters, where its inputs must be."""
    return next(model.parameters()).device


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 8,
             plain: bool = False) -> list[str]:
    """Greedy answers, one per prompt (user turn through the chat template, or as is when `plain`)."""
    outputs = []
    device = model_device(model)
    for i in range(0, len(prompts), batch_size):
        texts = prompts[i : i + batch_size] if plain else [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
            for p in prompts[i : i + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        outputs += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:].cpu(), skip_special_tokens=True)
    return outputs


def score_tasks(tasks, completions: list[str], backend: str) -> dict:
    """The rewards evaluator's summary (pass@1, verdict counts, ...) of one completion per task."""
    from rewards.__main__ import summarize
    from rewards.scorer import Scorer
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool

    with SandboxPool(SandboxConfig(backend=backend, num_workers=1)) as pool:
        return summarize(Scorer(pool, mode="raw").score(list(zip(tasks, completions))))


def load_task_set(spec: str, limit: int | None, split: TaskSplit):
    from rewards.tasks import load_embedded, load_tasks

    if spec == "embedded-heldout":  # the tasks SFT data leaves out
        tasks = sorted(split.split(load_embedded())[1], key=lambda t: t.task_id)
    else:
        tasks = load_embedded() if spec == "embedded" else load_tasks(spec)
    return tasks[:limit] if limit else tasks


def markdown_table(rows: list[dict]) -> str:
    def cell(text: str) -> str:
        return text.strip().replace("|", "\\|").replace("\n", "<br>")[:600]

    lines = ["| question | base | tuned |", "|---|---|---|"]
    lines += [f"| {cell(r['question'])} | {cell(r['base'])} | {cell(r['tuned'])} |" for r in rows]
    return "\n".join(lines) + "\n"


def compare(base: str, tuned: str, out_dir: Path, questions: Path | None, tasks: str | None,
            max_new_tokens: int = 128, limit: int | None = None, backend: str = "bwrap", plain: bool = False,
            split: TaskSplit | None = None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = read_questions(questions, limit) if questions else []
    task_list = load_task_set(tasks, limit, split or TaskSplit()) if tasks else []
    answers, summary = {}, {"out_dir": str(out_dir), "questions": len(prompts), "base": base, "tuned": tuned}
    for name, path in (("base", base), ("tuned", tuned)):
        model, tokenizer = load_model(path)
        answers[name] = generate(model, tokenizer, prompts, max_new_tokens, plain=plain) if prompts else []
        if task_list:
            completions = generate(model, tokenizer, [t.prompt for t in task_list], max_new_tokens, plain=plain)
            summary[f"{name}_tasks"] = score_tasks(task_list, completions, backend)
            summary[f"{name}_pass_rate"] = summary[f"{name}_tasks"].get("pass@1")
        del model
    rows = [{"question": q, "base": b, "tuned": t} for q, b, t in zip(prompts, answers["base"], answers["tuned"])]
    with open(out_dir / "compare.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    (out_dir / "compare.md").write_text(markdown_table(rows))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
