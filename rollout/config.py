"""Generation's typed config: the engines, the sampler, and how a step's batch is filled."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from configs.base import StrictModel


class DynamicSamplingConfig(StrictModel):
    """DAPO's dynamic sampling: a group whose K rewards are all equal has zero advantage and teaches nothing,
    so refill the batch with fresh prompts until `prompts_per_step` groups have a reward spread."""

    enabled: bool = Field(False, description="refill the batch with informative groups (DAPO)")
    oversample: float = Field(1.5, ge=1.0, description="a refill round draws this many prompts per missing group")
    max_rounds: int = Field(2, ge=0, description="extra generation rounds at most; the batch may stay short")


class CurriculumConfig(StrictModel):
    """Online difficulty selection (rollout/curriculum.py): each step's prompts are drawn tier by tier (a task's
    `tier`, e.g. a procedural family's level), preferring tiers whose recent pass rate is neither 0 nor 1."""

    enabled: bool = Field(False, description="draw prompts by tier weights instead of seeded epochs")
    window: int = Field(4, ge=1, description="trained steps whose pass counts set the weights (step s sees steps "
                        "s - staleness - window .. s - staleness - 1)")
    floor: float = Field(0.05, ge=0.0, description="added to every tier's weight p(1 - p), so none is starved")


class WeightTransferConfig(StrictModel):
    """How new weights reach the engines after every update (rollout/weight_transfer.py)."""

    mode: Literal["stream", "blobs"] = Field("stream", description="stream: learner rank 0 broadcasts the weights "
                                             "to every engine in buckets over a gloo/NCCL group (no hub); blobs: the "
                                             "fallback, the whole state through the driver and Ray's object store")
    bucket_mb: float = Field(256, gt=0, description="bytes per broadcast (stream): peak extra memory on each side "
                             "is one bucket plus one gathered parameter")
    blob_mb: float = Field(1024, gt=0, le=3584, description="largest safetensors blob (blobs): each RPC message "
                           "stays below msgspec's 4 GiB limit")
    timeout_s: float = Field(1800, gt=0, description="a transfer (rendezvous or one bucket) that takes longer is an "
                             "error naming the weight sync, not a hang; an engine joins after the generation it is "
                             "running, so keep this above one step's generation time")

    @property
    def bucket_bytes(self) -> int:
        return max(1, int(self.bucket_mb * 2**20))


class RolloutConfig(StrictModel):
    engines: int = Field(1, ge=1, description="vLLM engine actors")
    prompts_per_step: int = Field(8, ge=1, description="prompts (groups) per GRPO step")
    samples_per_prompt: int = Field(8, ge=2, description="K: group size for group-relative advantages")
    temperature: float = Field(1.0, gt=0.0, description="sampling temperature; the learner's log-probs, the "
                               "reference's and the entropy use logits / temperature too (the sampled policy)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass. Below 1, vLLM's log-probs are "
                         "renormalised over the nucleus and the learner's are not: the truncated IS weights and "
                         "logprob_mismatch then carry that gap (verl and OpenRLHF behave the same)")
    max_new_tokens: int = Field(128, ge=1, description="completion length cap; longer ones are truncated")
    stop: list[str] = Field(["\n}\n"], description="kept in the completion (the scorer applies each task's own "
                            "stop tokens and suffix): a top-level closing brace ends a function, EOS anything else")
    max_model_len: int = Field(1024, ge=64, description="vLLM context length (prompt + completion)")
    cpus_per_engine: float = Field(1.0, gt=0, description="Ray CPUs reserved per engine actor")
    gpus_per_engine: float = Field(0.0, ge=0, description="Ray GPUs per engine actor (0: vLLM-CPU)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine shards the model over (vLLM TP); the "
                                      "engine actor holds that many GPUs, so Ray places them on one node")
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1, description="vLLM's share of GPU memory")
    kv_cache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU engines")
    enforce_eager: bool = Field(True, description="no CUDA graphs (faster start, slower decode)")
    strip_prompt: bool = Field(True, description="drop the prompt's trailing whitespace so it ends at a token "
                               "boundary: BPE merges '\\n' with the next line's indent, and a prompt ending in a bare "
                               "'\\n' token is one the model rarely saw before code (bigcode-harness does the same)")
    chat_template: bool = Field(False, description="instruct models: wrap each prompt in the tokenizer's chat "
                                "template as a request to complete the function in a ```cpp block (pair with "
                                "reward.mode: chat, which scores the answer's last code block); `stop` then "
                                "defaults to none (the answer ends at EOS)")
    chunk_prompts: int = Field(0, ge=0, description="generate a step in request chunks of this many prompts and "
                               "score each chunk while the next one generates; 0: one call per engine per step")
    turns: int = Field(1, ge=1, description="attempts per completion: after a failing one the model is shown its "
                       "feedback (first compiler error, first failing case, sanitizer finding) as a DebugState block "
                       "and the prompt again, and revises; GRPO trains on every attempt's tokens, the feedback's are "
                       "masked (rollout/revision.py)")
    turn_discount: float = Field(0.9, gt=0.0, le=1.0, description="a trajectory's positive reward (a pass, or a "
                                 "failure's partial credit) times this per extra attempt (turns > 1); a negative one "
                                 "is not scaled toward 0")
    dynamic_sampling: DynamicSamplingConfig = Field(default_factory=DynamicSamplingConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    weight_transfer: WeightTransferConfig = Field(default_factory=WeightTransferConfig)

    @model_validator(mode="after")
    def _tensor_parallel_owns_its_gpus(self):
        if self.tensor_parallel_size > 1 and self.gpus_per_engine != self.tensor_parallel_size:
            raise ValueError(f"rollout.tensor_parallel_size={self.tensor_parallel_size} needs gpus_per_engine="
                             f"{self.tensor_parallel_size} (one GPU per shard, all on the engine's node); got "
                             f"{self.gpus_per_engine:g}")
        return self

    @model_validator(mode="after")
    def _revision_is_raw_completion(self):
        if self.turns > 1 and self.chat_template:
            raise ValueError("rollout.turns > 1 with rollout.chat_template is not supported yet: a revision appends "
                             "its feedback as code comments to a raw completion; use turns: 1 with chat models")
        if self.turns > 1 and self.max_model_len < 2 * self.max_new_tokens:
            raise ValueError(f"rollout.turns={self.turns} needs max_model_len ({self.max_model_len}) >= 2 x "
                             f"max_new_tokens ({self.max_new_tokens}): a revision holds the first attempt too")
        return self

    @model_validator(mode="after")
    def _chat_answers_end_at_eos(self):
        # the raw stop (a top-level closing brace) would cut a chat answer inside its code block
        if self.chat_template and "stop" not in self.model_fields_set:
            self.stop = []
        return self
