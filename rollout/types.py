"""The records that travel from generation to the learner, one per stage of a sample's life:

    Request          one prompt, K completions wanted                  (producer -> engine)
    Completion       one sampled completion with its token ids/logprobs (engine -> producer)
    ScoredCompletion + the verdict and reward breakdown from `rewards/`  (producer -> driver)
    TrainingSample   + the group-relative advantage and loss weight    (driver -> learner ranks)

Frozen dataclasses: nothing downstream mutates what an earlier stage produced (a `dict.update` on a shared
sample was how two stages disagreed about a reward before). They pickle through Ray as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sandbox.types import Verdict

GroupKey = tuple  # (step, position in the step) for training, ("eval", task index) for evaluation
FinishReason = Literal["stop", "length", "context"]  # context: no room left in max_model_len for a revision


@dataclass(frozen=True)
class Request:
    key: GroupKey
    prompt: str
    n: int  # completions of this prompt (the group size K)
    seed: int  # sampling seed: a function of (run seed, step, position), so staleness 0 is reproducible
    # A revision turn (rollout.turns > 1): the exact token ids of the conversation so far (prompt, earlier
    # attempts, feedback); `prompt` is then only the new text to append. Token ids, not text, so the learner
    # trains on the very tokens vLLM was conditioned on (re-tokenising the joined text can split them differently).
    prefix_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Completion:
    key: GroupKey
    index: int  # position within its group
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    rollout_logprobs: tuple[float, ...]  # the engine's logprob of each sampled token
    text: str
    finish_reason: FinishReason
    version: int  # the policy version of the engine that sampled it
    # 1 for a token the policy sampled, 0 for one it did not (a revision's feedback, inside completion_ids);
    # empty: every token was sampled (a one-turn completion)
    loss_mask: tuple[int, ...] = ()

    @property
    def truncated(self) -> bool:
        """Cut by max_new_tokens rather than ended by a stop string or EOS."""
        return self.finish_reason == "length"

    @property
    def ident(self) -> tuple:
        """What makes a sample unique in a run: counted exactly once."""
        return (self.key, self.index)


@dataclass(frozen=True)
class ScoredCompletion:
    completion: Completion
    task_id: str
    verdict: Verdict
    passed: bool
    reward: float | None  # None: the sandbox could not score it; never turned into a number
    components: dict[str, float] = field(default_factory=dict)
    tests_passed: int = 0
    tests_total: int = 0
    detail: str = ""  # why: first error, failing asserts, the runtime's stderr
    diagnostics: str = ""  # the compiler's first ~2 KB, lines relative to the completion
    sanitizer: dict | None = None  # the sanitizer's finding (reward.weights.sanitize only)
    # multi-turn revision (rollout.turns > 1): the attempts made (1 = passed or gave up at the first try), whether
    # the first attempt passed, and each attempt's verdict/reward/feedback; the fields above are the final attempt's
    turns: int = 1
    first_passed: bool | None = None
    attempts: tuple[dict, ...] = ()

    @classmethod
    def of(cls, completion: Completion, scored) -> ScoredCompletion:
        """From `rewards.types.ScoredSample` (whose verdict is the sandbox verdict's string value)."""
        return cls(completion=completion, task_id=scored.task_id, verdict=Verdict(scored.verdict),
                   passed=scored.passed, reward=scored.reward, components=dict(scored.components),
                   tests_passed=scored.tests_passed, tests_total=scored.tests_total, detail=scored.detail,
                   diagnostics=scored.diagnostics, sanitizer=scored.sanitizer)

    @property
    def key(self) -> GroupKey:
        return self.completion.key

    @property
    def compiled(self) -> bool:
        return self.verdict is not Verdict.COMPILE_ERROR


@dataclass(frozen=True)
class TrainingSample:
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    rollout_logprobs: tuple[float, ...]
    advantage: float
    weight: float = 1.0  # loss weight: 0 masks a sample (truncated under truncation=mask, rank padding)
    ident: tuple = ()  # the completion's (key, index), to join the advantage back to rollout dumps
    loss_mask: tuple[int, ...] = ()  # per completion token: 0 = not the policy's (a revision's feedback); empty: all 1

    @classmethod
    def of(cls, scored: ScoredCompletion, advantage: float, weight: float) -> TrainingSample:
        c = scored.completion
        return cls(c.prompt_ids, c.completion_ids, c.rollout_logprobs, advantage, weight, c.ident, c.loss_mask)

    @property
    def trained_tokens(self) -> int:
        """Completion tokens the loss covers (the policy's own): the loss denominator counts these."""
        return sum(self.loss_mask) if self.loss_mask else len(self.completion_ids)

    def padding(self) -> TrainingSample:
        """The same tokens with zero loss weight: what a rank with too few samples runs to keep collectives
        in step."""
        return TrainingSample(self.prompt_ids, self.completion_ids, self.rollout_logprobs, self.advantage, 0.0,
                              loss_mask=self.loss_mask)


def group_by_key(samples: list[ScoredCompletion]) -> dict[GroupKey, list[ScoredCompletion]]:
    """Samples by group key, groups and their members in first-seen order."""
    groups: dict = {}
    for s in samples:
        groups.setdefault(s.key, []).append(s)
    return groups
