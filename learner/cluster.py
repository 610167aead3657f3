"""The learner ranks as one object with typed methods: update, export, probe, save, load.

Every method runs on all ranks at once (each is a collective under FSDP2/DeepSpeed), so the driver never
calls a rank by itself. Rollout engines live in `rollout.engine_group`."""

from __future__ import annotations

import socket

import ray

from learner.batch import shard
from learner.config import RLVRConfig
from rollout.types import TrainingSample


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reduce_update(parts: list[dict]) -> dict:
    """The ranks' sums -> the step's metrics: loss summed over ranks, per-token means over all tokens."""
    tot = {k: sum(p[k] for p in parts) for k in parts[0]}
    ntok = max(tot["tokens"], 1.0)
    return {"loss": tot["loss"], "grad_norm": parts[0]["grad_norm"], "kl": tot["kl_sum"] / ntok,
            "entropy": tot["entropy_sum"] / ntok, "clip_fraction": tot["clip_fraction_sum"] / ntok,
            "logprob_mismatch": tot["mismatch_sum"] / ntok, "is_weight_mean": tot["is_weight_sum"] / ntok,
            "train_tokens": tot["tokens"]}


class LearnerGroup:
    def __init__(self, model_path: str, cfg: RLVRConfig) -> None:
        from learner.worker import LearnerWorker

        lc = cfg.learner
        self.cfg, self.world = cfg, lc.world_size
        port = free_port()
        actor = ray.remote(LearnerWorker).options(num_cpus=lc.cpus_per_worker, num_gpus=lc.gpus_per_worker)
        self.workers = [actor.remote(cfg, model_path, rank, self.world, port) for rank in range(self.world)]

    def _all(self, method: str, *per_rank: list, args: tuple = ()) -> list:
        refs = [getattr(w, method).remote(*[a[r] for a in per_rank], *args) for r, w in enumerate(self.workers)]
        return ray.get(refs)

    def update(self, samples: list[TrainingSample]) -> dict:
        """`algo.minibatches` optimizer steps on `samples`, sharded over the ranks by token count."""
        a = self.cfg.algo
        per_rank, tokens, micro = shard(samples, self.world, a.micro_batch_size, a.minibatches)
        return reduce_update(self._all("train", per_rank, args=(tokens, micro)))

    def export(self) -> dict:
        """Full HF-named weights (gathered on rank 0)."""
        return self._all("export_state")[0]

    def probe(self, token_ids: list[int]) -> list[float]:
        return self._all("probe_logprobs", args=(token_ids,))[0]

    def save(self, directory: str) -> None:
        self._all("save", args=(directory,))

    def load(self, directory: str) -> None:
        self._all("load", args=(directory,))

    def close(self) -> None:
        try:
            ray.get([w.close.remote() for w in self.workers], timeout=60)
        finally:
            for w in self.workers:
                ray.kill(w)
