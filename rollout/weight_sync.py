"""vLLM worker extension that takes new policy weights from the learner.

vLLM mixes this class into its worker (`worker_extension_cls="rollout.weight_sync.WeightSyncExtension"`) and
the engine calls it through `LLM.collective_rpc`, which carries metadata only on the default path: the worker
joins the transfer group learner rank 0 opened and receives the weights bucket by bucket
(`rollout.weight_transfer`), loading each parameter as soon as its bytes are in. The fallback path takes
safetensors blobs, each below msgspec's message limit.
"""

from __future__ import annotations

import hashlib

from rollout.weight_transfer import Address, Digest, Layout, close, join, receive


def blobs_digest(blobs: list[bytes]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for blob in blobs:
        h.update(blob)
    return h.hexdigest()


class WeightSyncExtension:
    """Methods run inside each vLLM worker process (`self` is the worker)."""

    def _reload(self, weights) -> None:
        self.model_runner.reload_weights(weights_iterator=weights)
        # A tied LM head is never in the weights (it is the embedding), so vLLM's layerwise reload "fails" it and
        # puts back its old kernel tensors: on CPU that is a prepacked GEMM copy of the OLD embedding, and the
        # engine would sample with a stale output layer while the probe, if the embedding moved, says so
        # (tests/integration/learner/test_weight_sync.py). Re-run the head's post-load processing.
        model = self.model_runner.get_model()
        head = getattr(model, "lm_head", None)
        tied = getattr(self.model_runner.model_config.hf_config, "tie_word_embeddings", False)
        if tied and head is not None and hasattr(getattr(head, "quant_method", None), "process_weights_after_loading"):
            head.quant_method.process_weights_after_loading(head)

    def crucible_receive_weights(self, address: dict, first_rank: int, layout: dict) -> str:
        """Join the transfer group as rank `first_rank` + this worker's rank and load the streamed weights.
        Returns the digest of the bytes received."""
        import torch

        addr, lay = Address(**address), Layout.from_wire(layout)
        model = self.model_runner.get_model()
        device = next(model.parameters()).device if addr.backend == "nccl" else torch.device("cpu")
        pg = join(addr, first_rank + getattr(self, "rank", 0))
        digest = Digest()
        try:
            self._reload(receive(pg, lay, device, digest))
        finally:
            close(pg)
        return digest.hexdigest()

    def crucible_load_weights(self, blobs: list[bytes]) -> str:
        """The fallback: safetensors blobs (the whole state split below the RPC message limit)."""
        from safetensors.torch import load

        # one reload over every blob: vLLM fuses tensors (q/k/v -> qkv_proj) and must see a layer's parts together
        self._reload(kv for blob in blobs for kv in load(blob).items())
        return blobs_digest(blobs)

    def crucible_param_checksum(self) -> float:
        """Sum of every parameter: cheap evidence that the engine's weights changed."""
        model = self.model_runner.get_model()
        return float(sum(p.detach().double().sum().item() for p in model.parameters()))
