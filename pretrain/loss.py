"""Per-token cross-entropy without materialising full-vocabulary logits for the whole micro-batch.

A 128k-token window with a 65k vocabulary is 8.6e9 logits: 34 GB in fp32 for the loss alone, twice that with
its gradient. Chunking computes the output projection and the loss for `chunk` tokens at a time, under
activation checkpointing, so forward and backward each hold one chunk of logits (torchtitan's loss-parallel
and Liger's fused linear cross-entropy solve the same problem).

It has to run *inside* the model's forward: under FSDP2 the output head's weight is only gathered while the
root module runs, and PEFT/DeepSpeed wrap the forward too. So `ChunkedLossHead` takes the place of the model's
`lm_head` by class (its parameter keeps its name, its tying and its sharding) and, while `loss_labels` holds
labels for it, returns per-token losses [B, T] instead of logits.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100


def _chunk_losses(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight)
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="none")


def chunked_token_losses(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    """Per-token losses (fp32, 0 where the label is IGNORE) of `hidden` [N, H] through `weight` [V, H], `chunk`
    tokens at a time; equal to the unchunked loss and its gradients (tested against it)."""
    if chunk <= 0:
        raise ValueError(f"chunk must be > 0, got {chunk}")
    pieces = []
    for start in range(0, hidden.shape[0], chunk):
        h, y = hidden[start:start + chunk], labels[start:start + chunk]
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            pieces.append(checkpoint(_chunk_losses, h, weight, y, use_reentrant=False))
        else:
            pieces.append(_chunk_losses(h, weight, y))
    return torch.cat(pieces)


class ChunkedLossHead(torch.nn.Linear):
    """An `nn.Linear` output head that computes chunked per-token losses while `labels` is set."""

    chunk: int = 8192
    labels: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.labels is None:
            return super().forward(hidden)
        shape = hidden.shape[:-1]
        losses = chunked_token_losses(hidden.reshape(-1, hidden.shape[-1]), self.weight,
                                      self.labels.reshape(-1).to(hidden.device), self.chunk)
        return losses.reshape(shape)


def install_chunked_head(model, chunk: int) -> None:
    """Turn the model's output head into a ChunkedLossHead in place (same module, same parameter)."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear and not isinstance(head, ChunkedLossHead):
        raise ValueError(f"chunked loss needs a plain nn.Linear output head, this model has {type(head).__name__}")
    head.__class__ = ChunkedLossHead
    head.chunk = chunk


@contextmanager
def loss_labels(model, labels: torch.Tensor):
    """While active, the model's forward returns per-token losses (its `.logits` field) for `labels`."""
    head = model.get_output_embeddings()
    head.labels = labels
    try:
        yield
    finally:
        head.labels = None


def token_losses(model, forward, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """Per-token fp32 losses, flattened [N] in the labels' order, through `forward(**inputs)`: chunked inside
    the head when one is installed, else from full logits."""
    head = model.get_output_embeddings()
    if isinstance(head, ChunkedLossHead):
        with loss_labels(model, labels):
            return forward(**inputs).logits.reshape(-1)
    logits = forward(**inputs).logits
    return F.cross_entropy(logits.float().flatten(0, -2), labels.to(logits.device).reshape(-1),
                           ignore_index=IGNORE, reduction="none")
