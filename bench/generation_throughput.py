"""Generation tokens/s: vLLM (the rollout engine's path) vs plain `transformers.generate`, same model, same
prompts, same sampling settings, same number of new tokens per completion (EOS ignored, so both produce
exactly max_new_tokens per sample), in one run on this machine.

    .venv/bin/python bench/generation_throughput.py [--samples 8] [--max-new-tokens 128] [--hf-batch 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox_throughput import save_report  # noqa: E402

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def prompts() -> list[str]:
    from rewards.tasks import load_embedded

    return [t.prompt for t in load_embedded()]


def run_vllm(model: str, texts: list[str], k: int, new: int) -> dict:
    from vllm import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(model=model, dtype="float32", max_model_len=1024, seed=0, enforce_eager=True,
              enable_chunked_prefill=False)  # as the rollout engine on CPU (see rollout/engine.py)
    init = time.perf_counter() - t0
    params = SamplingParams(n=k, temperature=1.0, max_tokens=new, min_tokens=new, ignore_eos=True, seed=0, logprobs=0)
    llm.generate(texts[:2], params, use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate(texts, params, use_tqdm=False)
    dt = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    return {"seconds": dt, "tokens": tokens, "tokens_per_s": tokens / dt, "init_seconds": init}


def run_hf(model: str, texts: list[str], k: int, new: int, batch: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model)
    tok.padding_side = "left"
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    per_call = max(1, batch // k)
    tokens = 0
    lm.generate(**tok(texts[:2], return_tensors="pt", padding=True), max_new_tokens=4, do_sample=True)  # warm-up
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), per_call):
            enc = tok(texts[i : i + per_call], return_tensors="pt", padding=True)
            out = lm.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=new, min_new_tokens=new,
                              num_return_sequences=k, pad_token_id=tok.pad_token_id, output_scores=False)
            tokens += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    dt = time.perf_counter() - t0
    return {"seconds": dt, "tokens": tokens, "tokens_per_s": tokens / dt, "batch_sequences": per_call * k}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--hf-batch", type=int, default=64, help="sequences per transformers.generate call")
    ap.add_argument("--out", default="bench/results/generation_throughput.json")
    args = ap.parse_args()
    from learner.tiny_policy import build_tiny_policy

    model = str(build_tiny_policy())
    texts = prompts()
    # vLLM first: its engine process must not be forked from a process whose OpenMP pool torch already started
    vl = run_vllm(model, texts, args.samples, args.max_new_tokens)
    hf = run_hf(model, texts, args.samples, args.max_new_tokens, args.hf_batch)
    report = {"model": "tiny-cpu policy (Qwen2, 2 layers, hidden 128)", "prompts": len(texts), "samples": args.samples,
              "max_new_tokens": args.max_new_tokens, "hf_generate": hf, "vllm": vl,
              "speedup": vl["tokens_per_s"] / hf["tokens_per_s"], "cpus": os.cpu_count(), "machine": platform.machine()}
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
