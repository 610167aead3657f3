"""The learner ranks as one object with typed methods: update, export, probe, save, load.

Every method runs on all ranks at once (each is a collective under FSDP2/DeepSpeed), so the driver never
calls a rank by itself. Rollout engines live in `rollout.engine_group`."""

from __future__ import annotations

import socket
import threading

import ray

from learner.batch import shard
from learner.config import RLVRConfig
from rollout.engine_group import StageTimeout
from rollout.types import TrainingSample
from rollout.weight_transfer import Layout


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
            "train_tokens": tot["tokens"], "mem_peak_gb": max(p["mem_peak_gb"] for p in parts)}


def _rendezvous() -> tuple[str, int]:
    """Runs in rank 0's bundle: this node's address and a port free on it (torchrun picks its port the same way)."""
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return ray.util.get_node_ip_address(), port


class LearnerGroup:
    def __init__(self, model_path: str, cfg: RLVRConfig) -> None:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from learner.worker import LearnerWorker

        lc = cfg.learner
        self.cfg, self.world, self.timeout_s = cfg, lc.world_size, cfg.run.call_timeout_s
        # The ranks are placed as one gang (a placement group): all of them or none, on as many nodes as their
        # bundles need (learner.placement). The rendezvous is on rank 0's node, whichever node that is.
        bundle = {"CPU": lc.cpus_per_worker, **({"GPU": lc.gpus_per_worker} if lc.gpus_per_worker else {})}
        self.pg = placement_group([bundle] * self.world, strategy=lc.placement)
        try:
            ray.get(self.pg.ready(), timeout=lc.placement_timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.util.remove_placement_group(self.pg)
            raise RuntimeError(f"the learner's {self.world} ranks ({bundle} each, learner.placement={lc.placement}) "
                               f"could not be placed within learner.placement_timeout_s={lc.placement_timeout_s:g}s; "
                               f"the cluster has {ray.cluster_resources()}") from None

        def in_bundle(i: int):
            return PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i)

        addr, port = ray.get(ray.remote(_rendezvous).options(num_cpus=0, scheduling_strategy=in_bundle(0)).remote())
        self.master = (addr, port)
        self.workers = [ray.remote(LearnerWorker).options(num_cpus=lc.cpus_per_worker, num_gpus=lc.gpus_per_worker,
                                                          scheduling_strategy=in_bundle(rank))
                        .remote(cfg, model_path, rank, self.world, port, addr) for rank in range(self.world)]
        self.lock = threading.Lock()
        self.transfer_lock = threading.Lock()  # one weight transfer at a time (rank 0 serves one group)
        self.layouts: dict[int, Layout] = {}

    def local_params(self) -> list[dict[str, int]]:
        """Per rank: parameter elements held for the policy and the KL reference."""
        return self._all("local_params")

    def nodes(self) -> list[str]:
        """Each rank's Ray node id."""
        return self._all("node_id")

    def _submit(self, method: str, *per_rank: list, args: tuple = ()) -> list:
        # Under the lock: calls from two threads (the driver's sync, the producer replacing an engine) reach every
        # rank in the same order, which collectives need.
        with self.lock:
            return [getattr(w, method).remote(*[a[r] for a in per_rank], *args) for r, w in enumerate(self.workers)]

    def _all(self, method: str, *per_rank: list, args: tuple = ()) -> list:
        return self._get(method, self._submit(method, *per_rank, args=args))

    def _get(self, method: str, refs: list) -> list:
        try:
            return ray.get(refs, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise StageTimeout(f"learner ranks: {method} did not finish within {self.timeout_s:g}s "
                               f"(run.call_timeout_s)") from None

    def update(self, samples: list[TrainingSample]) -> dict:
        """`algo.minibatches` optimizer steps on `samples`, sharded over the ranks by token count."""
        a = self.cfg.algo
        per_rank, tokens, micro = shard(samples, self.world, a.micro_batch_size, a.minibatches)
        return reduce_update(self._all("train", per_rank, args=(tokens, micro)))

    def skip(self) -> None:
        """A step without samples: every rank's policy version moves on, the weights do not."""
        self._all("skip")

    def export(self) -> dict:
        """Full HF-named weights (gathered on rank 0, then sent here: the fallback path and tests)."""
        return self._all("export_state")[0]

    def layout(self, bucket_bytes: int) -> Layout:
        """Names, wire dtypes and shapes of the exported weights (the same every step: computed once)."""
        if bucket_bytes not in self.layouts:
            self.layouts[bucket_bytes] = self._all("weight_layout", args=(bucket_bytes,))[0]
        return self.layouts[bucket_bytes]

    def stream(self, receivers: int, layout: Layout, start_receivers, timeout_s: float) -> tuple[str, int]:
        """Stream the current weights to `receivers` engine workers: rank 0 opens the rendezvous on its node,
        `start_receivers(address)` makes the engines join, every rank gathers parameter by parameter and rank 0
        broadcasts bucket by bucket. Returns the digest of the bytes sent and the policy version."""
        with self.transfer_lock:
            # Both calls reach every rank back to back (no `train` from another thread in between): rank 0's
            # send_weights takes its own open_transfer result, resolved by Ray.
            with self.lock:
                opened = [w.open_transfer.remote(receivers, timeout_s) for w in self.workers]
                sent = [w.send_weights.remote(opened[0] if r == 0 else None, layout)
                        for r, w in enumerate(self.workers)]
            address = self._get("open_transfer", opened)[0]
            start_receivers(address)
            return self._get("send_weights", sent)[0]

    def masters(self) -> dict:
        """The fp32 master weights (gathered on rank 0): what the optimizer steps, whatever the compute dtype."""
        return self._all("master_weights")[0]

    def probe(self, token_ids: list[int]) -> list[float]:
        return self._all("probe_logprobs", args=(token_ids,))[0]

    def save(self, directory: str, policy_dir: str | None = None) -> None:
        """Each rank's resume state under `directory`; rank 0 also writes the HF policy to `policy_dir`. Paths
        are the ranks' own: on several nodes they must name a filesystem every node shares."""
        self._all("save", args=(directory, policy_dir))

    def load(self, directory: str, version: int | None = None) -> None:
        self._all("load", args=(directory, version))

    def close(self) -> None:
        try:
            ray.get([w.close.remote() for w in self.workers], timeout=60)
        finally:
            for w in self.workers:
                ray.kill(w)
            ray.util.remove_placement_group(self.pg)
