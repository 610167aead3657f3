"""Multi-turn revision with the real parts in one process: the Producer over a vLLM-CPU engine (EngineGroup,
LocalCalls) scored by the real sandbox. Prints the trajectories as JSON (run as a script: vLLM wants the
`__main__` guard)."""

from __future__ import annotations

import json
import sys

if __name__ == "__main__":
    from rewards.reward import RewardConfig
    from rewards.scorer import Scorer
    from rewards.tasks import load_embedded
    from rollout.config import RolloutConfig
    from rollout.engine import RolloutEngine
    from rollout.engine_group import EngineGroup, LocalCalls
    from rollout.producer import Producer
    from rollout.types import Request
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool

    path, backend, max_model_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = RolloutConfig(temperature=1.0, max_new_tokens=24, max_model_len=max_model_len, turns=3, chunk_prompts=1)
    tasks = load_embedded()[:2]
    with SandboxPool(SandboxConfig(backend=backend, num_workers=1)) as pool:
        scorer = Scorer(pool, RewardConfig())
        group = EngineGroup(lambda: RolloutEngine(path, cfg, dtype="float32", seed=0), 1, LocalCalls())
        producer = Producer(group, scorer.score, tasks, cfg, seed=0, staleness=0)
        keys = [("eval", i) for i in range(len(tasks))]
        scored, stats = producer.rollout(tasks, keys, 2, [11, 12])
        producer.close()
        # the context check: a revision whose conversation already fills max_model_len comes back as "context"
        engine = group.engines[0]
        full = engine.generate([Request(("full",), "// more", 1, 0, prefix_ids=(5,) * (max_model_len - 1))])
    print("RESULT " + json.dumps({
        "stats": stats, "full": [c.finish_reason for c in full],
        "samples": [{"prompt_ids": s.completion.prompt_ids, "completion_ids": s.completion.completion_ids,
                     "logprobs": s.completion.rollout_logprobs, "loss_mask": s.completion.loss_mask,
                     "turns": s.turns, "first_passed": s.first_passed, "passed": s.passed, "reward": s.reward,
                     "attempts": s.attempts, "task_id": s.task_id} for s in scored]}), flush=True)
