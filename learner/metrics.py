"""Per-step metrics of an RLVR run, written to every place someone may look at them.

`MetricsSink.log(step, record)` is called by the driver once per GRPO step and writes:
  * `out_dir/metrics.jsonl`: one JSON line per step, the source of truth (`learner.report` reads it);
  * TensorBoard scalars under `out_dir/tensorboard`;
  * Ray gauges `crucible_rlvr_<key>` (lower case), which Ray exports to Prometheus as
    `ray_crucible_rlvr_<key>` (`configs/grafana/crucible-rlvr.json` plots them);
  * optionally Weights & Biases.

Nested dicts (`{"verdicts": {"OK": 12}}`) stay nested in the JSONL and are flattened to `verdicts/OK` for
the scalar sinks. A run resumed from a checkpoint logs some steps again; `read_metrics` keeps the last
record of each step.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GAUGE_PREFIX = "crucible_rlvr_"
JSONL_NAME = "metrics.jsonl"


def gauge_name(key: str) -> str:
    """`verdicts/OK` -> `crucible_rlvr_verdicts_ok`. Prometheus names allow only [a-zA-Z0-9_]; lower case
    because Ray's OpenTelemetry recorder exports names lower-cased anyway (seen on Ray 2.60), so the name
    here is the one to look for in Prometheus, after the `ray_` prefix."""
    return GAUGE_PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", key).lower()


def _plain(value: Any) -> Any:
    """numpy / torch scalars -> Python numbers, so json and the scalar sinks accept them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def flatten_scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of `record` keyed `a/b`; None, strings and lists are not scalars and are skipped."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_scalars(value, f"{name}/"))
        elif isinstance(value, (int, float)):
            out[name] = float(value)
    return out


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a metrics.jsonl, one per step (the last one logged for that step), sorted by step.

    Lines that do not parse are skipped: a writer killed mid-line leaves a truncated last line (and
    after a resume that line sits in the middle, since the sink starts a new line on open)."""
    path = Path(path)
    if not path.exists():
        return []
    by_step: dict[int, dict] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a truncated or corrupt line", path, lineno)
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            by_step[record["step"]] = record  # a later line for the same step wins (resumed run)
    return [by_step[s] for s in sorted(by_step)]


class MetricsSink:
    def __init__(self, out_dir: str | Path, tensorboard: bool = True, ray_metrics: bool = True,
                 wandb_project: str | None = None, run_name: str = "rlvr", config: dict | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / JSONL_NAME
        self.run_name = run_name
        self.config = config
        self._tensorboard = tensorboard
        self._ray_metrics = ray_metrics
        self._tb = None  # created on the first log(), see _tb_writer
        self._gauges: dict[str, Any] = {}
        self._ray_failed = False
        # Appending keeps what earlier (killed, then resumed) runs logged. If one died mid-line, start a
        # new line so our first record does not get glued onto the broken one.
        resumed = self.path.exists() and self.path.stat().st_size > 0
        if resumed:
            with open(self.path, "rb") as f:
                f.seek(-1, 2)
                broken = f.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8")
        if resumed and broken:
            self._file.write("\n")
        self._resumed = resumed
        self._wandb = self._start_wandb(wandb_project) if wandb_project else None

    def log(self, step: int, record: dict[str, Any]) -> None:
        record = _plain(record)
        self._file.write(json.dumps({"step": int(step), **record}) + "\n")
        self._file.flush()  # a killed run keeps every step it logged
        scalars = flatten_scalars(record)
        if self._tensorboard:
            writer = self._tb_writer(step)
            for key, value in scalars.items():
                writer.add_scalar(key, value, global_step=step)
            writer.flush()  # the default flushes every 2 minutes; a step takes about that long
        if self._ray_metrics:
            self._set_gauges(scalars)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> MetricsSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tb_writer(self, first_step: int):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            # On resume, hide the events of steps >= the first step we log again, so TensorBoard shows one
            # curve rather than two overlapping ones (like read_metrics keeping the last record).
            purge = first_step if self._resumed else None
            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=purge)
        return self._tb

    def _set_gauges(self, scalars: dict[str, float]) -> None:
        # The driver's own core worker exports its gauges to the node's metrics agent (checked on Ray 2.60
        # by tests/unit/learner/test_metrics_report.py), so no helper actor is needed.
        import ray

        if self._ray_failed or not ray.is_initialized():
            return
        try:
            from ray.util.metrics import Gauge

            for key, value in scalars.items():
                name = gauge_name(key)  # keys differing only in punctuation or case share a gauge
                if name not in self._gauges:
                    # the `run` tag lets one Grafana dashboard tell runs on the same cluster apart
                    self._gauges[name] = Gauge(name, f"RLVR per-step metric {key}", tag_keys=("run",))
                self._gauges[name].set(value, tags={"run": self.run_name})
        except Exception:  # metrics must never stop a training run
            log.warning("Ray metrics disabled for this run", exc_info=True)
            self._ray_failed = True

    def _start_wandb(self, project: str):
        try:
            import wandb
        except ImportError:
            log.warning("wandb_project=%r set but wandb is not installed; skipping W&B", project)
            return None
        # one W&B run per out_dir: its id is kept there, so a resumed run continues the same W&B run
        id_file = self.out_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else wandb.util.generate_id()
        id_file.write_text(run_id)
        return wandb.init(project=project, name=self.run_name, id=run_id, resume="allow", config=self.config,
                          dir=str(self.out_dir))
