"""Weight sync time and peak memory vs model size: the old hub path (the learner's state gathered into the driver,
serialized to safetensors blobs, through Ray's object store into the engine) against the stream (learner rank 0
broadcasts buckets straight into the engine's worker over gloo), in one run, on the same learner and engine.

    .venv/bin/python bench/weight_sync.py [--sizes tiny,100m,500m] [--bucket-mb 64] [--repeats 2]

Models are random Qwen2 checkpoints of the given size (the tiny policy's tokenizer), fp32, the local learner and one
vLLM-CPU engine on a private local Ray. Each path runs `--repeats` times; the table takes the fastest time and the
largest peak. Peak memory is RSS above the process's level just before the sync, sampled every 10 ms: the driver
(this process) and learner rank 0 (its actor process). The probe after each sync checks that the engine runs
exactly the learner's weights (max |logprob difference| < 1e-4), so neither path is timed doing less.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox_throughput import save_report  # noqa: E402

SIZES = {  # name: (hidden, layers, intermediate, heads, kv heads)
    "tiny": None,  # the embedded tiny policy (0.9M parameters)
    "100m": (768, 12, 2048, 12, 4),
    "500m": (1536, 16, 4096, 12, 4),
}


def build_model(size: str, root: Path) -> tuple[str, int]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from learner.tiny_policy import build_tiny_policy

    tiny = str(build_tiny_policy())
    if SIZES[size] is None:
        model = AutoModelForCausalLM.from_pretrained(tiny)
        return tiny, sum(p.numel() for p in model.parameters())
    hidden, layers, inter, heads, kv = SIZES[size]
    config = AutoConfig.from_pretrained(tiny)
    config.update({"hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": inter,
                   "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hidden // heads,
                   "layer_types": ["full_attention"] * layers})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    out = root / size
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(out)
    return str(out), sum(p.numel() for p in model.parameters())


class PeakRSS:
    """Peak RSS of a process above its level when started, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.base = self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def measure(size: str, path: str, params: int, bucket_mb: float, repeats: int) -> dict:
    import os

    import numpy as np
    import ray

    from learner.cluster import LearnerGroup
    from learner.config import RLVRConfig
    from rollout.engine_group import BusSource, BytesSource, EngineGroup
    from rollout.weight_transfer import state_to_blobs

    cfg = RLVRConfig(model={"path": path}, learner={"cpus_per_worker": 1},
                     rollout={"engines": 1, "cpus_per_engine": 1, "max_model_len": 256,
                              "weight_transfer": {"bucket_mb": bucket_mb}})
    learners = LearnerGroup(path, cfg)
    engines = EngineGroup.on_ray(path, cfg.rollout, "float32", seed=0)
    learner_pid = ray.get(learners.workers[0].__ray_call__.remote(lambda self: os.getpid()))
    ids = list(range(1, 64))
    mine = np.array(learners.probe(ids))
    rows = {}
    try:
        for name in ("hub (blobs via driver)", "stream (buckets over gloo)"):
            times, driver_mb, learner_mb = [], [], []
            for _ in range(repeats):
                with PeakRSS(os.getpid()) as drv, PeakRSS(learner_pid) as lrn:
                    t0 = time.perf_counter()
                    if name.startswith("hub"):
                        source = BytesSource(state_to_blobs(learners.export(), int(cfg.rollout.weight_transfer.blob_mb
                                                                                   * 2**20)), 0)
                    else:
                        source = BusSource(learners, learners.layout(cfg.rollout.weight_transfer.bucket_bytes), 600)
                    engines.push(source)
                    times.append(time.perf_counter() - t0)
                    del source
                driver_mb.append(drv.extra_mb)
                learner_mb.append(lrn.extra_mb)
                gap = float(np.abs(np.array(engines.probe(ids)[0]) - mine).max())
                assert gap < 1e-4, f"{name}: the engine does not run the learner's weights (gap {gap})"
            rows[name] = {"sync_s": min(times), "driver_peak_mb": max(driver_mb), "learner_peak_mb": max(learner_mb)}
    finally:
        engines.close()
        learners.close()
    return {"size": size, "params": params, "weights_mb": params * 4 / 2**20, **{
        f"{k}|{m}": v for k, r in rows.items() for m, v in r.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,100m,500m")
    ap.add_argument("--bucket-mb", type=float, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="bench/results/weight_sync.json")
    args = ap.parse_args()
    import ray

    ray.init(num_cpus=4, _node_ip_address="127.0.0.1", include_dashboard=False, address="local", log_to_driver=False)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for size in args.sizes.split(","):
                path, params = build_model(size, Path(tmp))
                row = measure(size, path, params, args.bucket_mb, args.repeats)
                print(row, file=sys.stderr, flush=True)
                results.append(row)
    finally:
        ray.shutdown()
    save_report({"bench": "weight_sync", "bucket_mb": args.bucket_mb, "repeats": args.repeats, "results": results},
                args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
