"""Multi-turn revision (rollout.turns > 1), as pure functions over the rollout records.

A failing attempt is shown its feedback, in the design's debug-state format that repair tasks use,

    <prompt><attempt 1>
    // TASK: Fix the bug in `f` (its tests fail: WRONG_ANSWER)
    struct DebugState {
      // verdict: WRONG_ANSWER
      // tests: 1/3 asserts passed; failed #2 `assert (f(2) == 4);`
    };
    <prompt again>                 <- the model writes attempt 2 from here

and tries again, up to `turns` attempts. The whole conversation is one training sequence: the prompt, then
every attempt and every feedback block in order, where the feedback's tokens (and the repeated prompt) carry
loss mask 0 so GRPO trains only on what the policy sampled. The trajectory's reward is its last attempt's, a
positive one discounted by `turn_discount` per extra attempt.
"""

from __future__ import annotations

from dataclasses import replace

from rewards.repair import DebugState, debug_state, summary_of
from rewards.types import Task
from rollout.types import Completion, ScoredCompletion


def needs_revision(s: ScoredCompletion) -> bool:
    """Attempts that failed in a way the model can act on. A sandbox failure (no reward) is not the model's."""
    return not s.passed and s.reward is not None


def feedback_state(s: ScoredCompletion) -> DebugState:
    """The trimmed feedback: the first compiler error, the first failing case, the sanitizer's finding, with
    locations counted in lines of the attempt (the code right above the feedback)."""
    finding = dict(s.sanitizer) if s.sanitizer else None
    if finding:  # where in the attempt, not in the whole solution.cpp the sandbox compiled
        line = finding.get("completion_line")
        finding.update(file="solution.cpp" if line else "", line=line or 0)
    view = _Sample(s.verdict.value, s.diagnostics, s.detail, finding)
    return debug_state(view, head_lines=0)


def feedback_text(s: ScoredCompletion, task: Task, prompt: str) -> str:
    """The text appended after a failing attempt: the debug state, then the task's prompt again, so the model's
    next attempt is a completion of the same prompt and is scored exactly as a first attempt is."""
    name = f"`{task.entry_point}`" if task.entry_point else "the program"
    state = feedback_state(s)
    lead = "" if s.completion.text.endswith("\n") else "\n"
    return f"{lead}// TASK: Fix the bug in {name} ({summary_of(state)})\n{state.render()}\n{prompt}"


def join_attempt(trajectory: Completion, attempt: Completion) -> Completion:
    """The trajectory so far with one more attempt: the attempt's prompt is the trajectory's tokens plus the
    feedback, so everything past the trajectory in it is feedback (loss mask 0) and the attempt's own tokens
    follow (mask 1). Text and finish reason are the attempt's (what is scored); the version is the oldest."""
    base = trajectory.prompt_ids + trajectory.completion_ids
    if attempt.prompt_ids[: len(base)] != base:
        raise ValueError(f"revision of {trajectory.ident}: the attempt's prompt does not extend the trajectory's "
                         f"tokens (the engine must be given them as prefix_ids)")
    feedback = attempt.prompt_ids[len(base):]
    mask = (trajectory.loss_mask or (1,) * len(trajectory.completion_ids)) + (0,) * len(feedback) + \
        (1,) * len(attempt.completion_ids)
    return Completion(trajectory.key, trajectory.index, trajectory.prompt_ids,
                      trajectory.completion_ids + feedback + attempt.completion_ids,
                      trajectory.rollout_logprobs + (0.0,) * len(feedback) + attempt.rollout_logprobs,
                      attempt.text, attempt.finish_reason, min(trajectory.version, attempt.version), mask)


def discounted(reward: float | None, turns: int, discount: float) -> float | None:
    """The trajectory's reward: the last attempt's, a positive one times discount^(turns - 1). A failure is never
    made cheaper by trying longer (a negative reward is not scaled toward 0)."""
    if reward is None or reward <= 0:
        return reward
    return reward * discount ** (turns - 1)


def attempt_record(s: ScoredCompletion, turn: int, feedback: str) -> dict:
    return {"turn": turn, "verdict": s.verdict.value, "passed": s.passed, "reward": s.reward,
            "completion": s.completion.text, "feedback": feedback}


def trajectory_result(first: ScoredCompletion, completion: Completion, last: ScoredCompletion,
                      attempts: list[dict], discount: float) -> ScoredCompletion:
    """The scored trajectory the learner trains on: the last attempt's verdict and components, plus a
    `revision` component (<= 0) so the components still sum to the discounted reward."""
    turns = len(attempts)
    reward = discounted(last.reward, turns, discount)
    components = dict(last.components)
    if turns > 1 and reward is not None:
        components["revision"] = reward - last.reward
    return replace(last, completion=completion, reward=reward, components=components, turns=turns,
                   first_passed=first.passed, attempts=tuple(attempts))


class _Sample:
    """The fields of a scored sample that `rewards.repair.debug_state` reads."""

    def __init__(self, verdict: str, diagnostics: str, detail: str, sanitizer: dict | None) -> None:
        self.verdict, self.diagnostics, self.detail, self.sanitizer = verdict, diagnostics, detail, sanitizer
