"""Do packed documents stay apart? A run-time probe, on the real batch shape, the real device, dtype and attention
implementation, before the first optimizer step.

Packing puts several documents in one window and several windows in one micro-batch; attention must not cross
either boundary. Whether it does depends on things a config cannot see: which kernel transformers dispatches to,
whether it derives document boundaries from position ids for a batch of this size, whether a mask is built at
all. Reading the code got this wrong before (flash-attn mixed the windows of a micro-batch > 1), so we measure:

1. forward a real batch twice: the difference is the run's own numerical noise (0 on deterministic kernels);
2. replace every token of one document (the first of row 0) with random tokens and forward again;
3. the *leak* is how far the per-token losses of every other token in the batch moved; the *signal* is how
   far the changed document's own losses moved (the scale a real dependency has in this model and dtype).

Under isolation the other tokens' losses are bit-identical (same shapes, masked scores contribute exact
zeros), so the leak is 0 up to the measured noise. A model whose attention crosses documents moves them by a
visible fraction of the signal. The forward is the training one, per-token losses included: with a chunked
loss head no full-vocabulary logits are materialised (a 128k-token window would need 34 GB for them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

RELATIVE_TOLERANCE = 1e-3  # a leak must stay below this fraction of the signal
NOISE_FACTOR = 4.0  # ... and above the noise measured by repeating the identical forward


@dataclass(frozen=True)
class IsolationReport:
    leak: float  # max |change| of other documents' token losses when one document's tokens change
    signal: float  # max |change| of the changed document's own token losses
    noise: float  # max |change| between two identical forwards
    threshold: float
    isolated: bool
    attn_implementation: str
    batch_shape: tuple[int, int]

    def as_dict(self) -> dict:
        return asdict(self)


def leak_threshold(signal: float, noise: float) -> float:
    """What a leak must stay under: above the run's own noise, and far below the effect a real dependency has."""
    return max(NOISE_FACTOR * noise, RELATIVE_TOLERANCE * signal)


def victim_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the first document of row 0 (from its position 0 to the next one)."""
    doc = (position_ids == 0).cumsum(-1)
    mask = torch.zeros_like(position_ids, dtype=torch.bool)
    mask[0] = doc[0] == 1
    return mask


@torch.no_grad()
def measure_isolation(forward: Callable[[dict], torch.Tensor], batch: dict, vocab_size: int,
                      attn_implementation: str, seed: int = 0) -> IsolationReport | None:
    """`forward(batch) -> per-token losses` ([B, T] or [B*T]) runs the model exactly as training does (device,
    autocast, packed kwargs, loss head) on `batch["input_ids"]` against the batch's own `labels`. None when
    the batch has a single document (nothing to leak into)."""
    ids, pos = batch["input_ids"], batch["position_ids"]
    shape = (ids.shape[0], ids.shape[1])
    victim = victim_mask(pos)
    single = bool(victim.all())  # nothing to leak into; the forwards still run (FSDP2 ranks must run alike)
    g = torch.Generator().manual_seed(seed)
    changed_ids = ids.clone()
    changed_ids[victim] = torch.randint(0, vocab_size, (int(victim.sum()),), generator=g)
    changed_ids[victim] = torch.where(changed_ids[victim] == ids[victim], (changed_ids[victim] + 1) % vocab_size,
                                      changed_ids[victim])  # every token really changes

    def run(input_ids: torch.Tensor) -> torch.Tensor:
        return forward({**batch, "input_ids": input_ids}).float().reshape(shape).cpu()

    base, again, changed = run(ids), run(ids), run(changed_ids)
    if single:
        return None
    delta = (changed - base).abs()  # [B, T]
    leak = float(delta[~victim].max())
    signal = float(delta[victim].max())
    noise = float((again - base).abs().max())
    threshold = leak_threshold(signal, noise)
    return IsolationReport(leak, signal, noise, threshold, leak <= threshold, attn_implementation, shape)


class DocumentLeakError(RuntimeError):
    """Packed documents attend to each other with this model and attention implementation."""


def require_isolation(report: IsolationReport | None) -> None:
    if report is None or report.isolated:
        return
    raise DocumentLeakError(
        f"packed documents attend to each other: with attn_implementation={report.attn_implementation!r} and "
        f"micro-batches of {report.batch_shape[0]} x {report.batch_shape[1]}, changing one document moved the "
        f"token losses of the others by {report.leak:.3g} (its own by {report.signal:.3g}; repeat-forward noise "
        f"{report.noise:.3g}, threshold {report.threshold:.3g}). Use model.attn_implementation=sdpa (or "
        "flex_attention), or data.micro_batch_size=1")
