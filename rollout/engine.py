"""A rollout engine: one vLLM `LLM` inside a Ray actor. It generates K completions per prompt with per-token
logprobs, takes new weights from the learner (carrying a policy version), and answers the probe used to check
that vLLM's weights really are the learner's."""

from __future__ import annotations

import os

from rollout.config import RolloutConfig
from rollout.types import Completion, Request


CHAT_REQUEST = ("Complete the following C++ function. Answer with the whole function in one ```cpp code block."
                "\n\n```cpp\n{prompt}\n```")


def chat_prompt(tokenizer, prompt: str) -> str:
    """The task's code prefix as a user turn in the model's own chat template, ready for the assistant's answer."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("rollout.chat_template: the model's tokenizer has no chat template (an instruct model's "
                         "tokenizer_config.json or chat_template.jinja carries one)")
    return tokenizer.apply_chat_template([{"role": "user", "content": CHAT_REQUEST.format(prompt=prompt)}],
                                         tokenize=False, add_generation_prompt=True)


class RolloutEngine:
    def __init__(self, model_path: str, rollout: RolloutConfig, dtype: str, seed: int) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(rollout.kv_cache_gib))
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if not rollout.gpus_per_engine:
            # One process on CPU: vLLM's separate engine-core process costs ~20 s of start-up and buys nothing
            # without a GPU to keep busy (python -m learner.evaluate does the same).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.rollout = rollout
        if rollout.gpus_per_engine:
            kwargs = {"gpu_memory_utilization": rollout.gpu_memory_utilization}
            if rollout.tensor_parallel_size > 1:  # shards in processes vLLM starts on this actor's GPUs
                kwargs.update(tensor_parallel_size=rollout.tensor_parallel_size, distributed_executor_backend="mp")
        else:
            # Seeded sampling + chunked prefill crashes vLLM-CPU (it rewinds a CPU torch.Generator's offset
            # for discarded partial-prefill tokens, which CPU generators do not support).
            kwargs = {"enable_chunked_prefill": False}
        # processed_logprobs: the sampled tokens' log-probs under the distribution actually sampled from (after
        # temperature and top-p), not vLLM's default raw T=1 ones; the learner scores with logits / temperature.
        self.llm = LLM(model=model_path, dtype=dtype, max_model_len=rollout.max_model_len, seed=seed,
                       enforce_eager=rollout.enforce_eager, enable_prefix_caching=True,
                       logprobs_mode="processed_logprobs",
                       worker_extension_cls="rollout.weight_sync.WeightSyncExtension", **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        if rollout.chat_template:
            chat_prompt(self.tokenizer, "")  # no template: fail at start, not at the first step
        self.version = 0

    def generate(self, requests: list[Request]) -> list[Completion]:
        """K completions per request, in request order, each with its sampled-token logprobs and the policy
        version that produced it. The text keeps the stop string (a function's closing brace): where a
        completion ends is the scorer's call, per task (its stop tokens and suffix)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        r = self.rollout
        params = [SamplingParams(n=q.n, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                                 stop=r.stop or None, include_stop_str_in_output=True, logprobs=0, seed=q.seed)
                  for q in requests]
        prompts = [self._prompt(q) for q in requests]
        # a revision whose context leaves less than max_new_tokens is not generated (vLLM would cut it at
        # max_model_len, and a cut answer is masked as truncated): it comes back empty, as finish_reason "context",
        # and its trajectory keeps the attempt before it
        room = [not isinstance(p, list) or len(p) + r.max_new_tokens <= r.max_model_len for p in prompts]
        runs = [(q, p, s) for q, p, s, ok in zip(requests, prompts, params, room) if ok]
        outputs = iter(self.llm.generate([TokensPrompt(prompt_token_ids=p) if isinstance(p, list) else p
                                          for _, p, _ in runs], [s for *_, s in runs], use_tqdm=False) if runs else [])
        done = []
        for q, p, ok in zip(requests, prompts, room):
            if not ok:
                done += [Completion(q.key, idx, tuple(p), (), (), "", "context", self.version) for idx in range(q.n)]
                continue
            out = next(outputs)
            done += [Completion(key=q.key, index=idx, prompt_ids=tuple(out.prompt_token_ids),
                                completion_ids=tuple(c.token_ids),
                                rollout_logprobs=tuple(d[t].logprob for d, t in zip(c.logprobs, c.token_ids)),
                                text=c.text, finish_reason="length" if c.finish_reason == "length" else "stop",
                                version=self.version)
                     for idx, c in enumerate(out.outputs)]
        return done

    def _prompt(self, q: Request) -> str | list[int]:
        """Text for a first attempt; for a revision, the conversation's exact token ids plus the new text's."""
        if q.prefix_ids:
            return [*q.prefix_ids, *self.tokenizer(q.prompt, add_special_tokens=False)["input_ids"]]
        return chat_prompt(self.tokenizer, q.prompt) if self.rollout.chat_template else q.prompt

    def receive_weights(self, address: dict, first_rank: int, layout: dict) -> str:
        """Join learner rank 0's transfer group and load the streamed weights; returns the bytes' digest. The
        version is set afterwards (`set_version`), once every engine has the weights."""
        digests = self.llm.collective_rpc("crucible_receive_weights", args=(address, first_rank, layout))
        self.llm.reset_prefix_cache()  # cached KV was computed with the old weights
        if len(set(digests)) != 1:  # tensor-parallel shards each got the full stream: all must agree
            raise RuntimeError(f"weight transfer: this engine's workers received different bytes: {digests}")
        return digests[0]

    def load_weights(self, blobs: list[bytes], version: int) -> str:
        """The fallback path: safetensors blobs through the RPC (each below its message limit)."""
        digest = self.llm.collective_rpc("crucible_load_weights", args=(blobs,))[0]
        self.llm.reset_prefix_cache()
        self.version = version
        return digest

    def set_version(self, version: int) -> None:
        self.version = version

    def get_version(self) -> int:
        return self.version

    def param_checksum(self) -> float:
        return self.llm.collective_rpc("crucible_param_checksum")[0]

    def probe_logprobs(self, token_ids: list[int]) -> list[float]:
        """vLLM's logprob of each token of `token_ids` given the ones before (first position has none)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        out = self.llm.generate(TokensPrompt(prompt_token_ids=token_ids),
                                SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0), use_tqdm=False)[0]
        return [d[t].logprob for d, t in zip(out.prompt_logprobs[1:], token_ids[1:])]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]
