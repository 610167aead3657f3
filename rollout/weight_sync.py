"""vLLM worker extension that takes new policy weights from the learner.

vLLM mixes this class into its worker (`worker_extension_cls="rollout.weight_sync.WeightSyncExtension"`) and
the engine calls it through `LLM.collective_rpc`. On CPU the learner's state arrives as safetensors bytes
(one copy through Ray's object store); on GPU clusters the same entry point would take a CUDA-IPC handle or
an NCCL broadcast, with the byte path kept as the portable fallback.
"""

from __future__ import annotations

import hashlib


def state_to_bytes(state: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous().cpu() for k, v in state.items()})


def state_digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:16]


class WeightSyncExtension:
    """Methods run inside each vLLM worker process (`self` is the worker)."""

    def crucible_load_weights(self, blob: bytes) -> str:
        from safetensors.torch import load

        state = load(blob)
        self.model_runner.reload_weights(weights_iterator=iter(state.items()))
        return state_digest(blob)

    def crucible_param_checksum(self) -> float:
        """Sum of every parameter: cheap evidence that the engine's weights changed."""
        model = self.model_runner.get_model()
        return float(sum(p.detach().double().sum().item() for p in model.parameters()))
