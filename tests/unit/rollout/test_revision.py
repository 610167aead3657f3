"""Multi-turn revision's pure parts against hand values: joining attempts into one training sequence with the
feedback masked, the discounted reward, the feedback text, and the learner's batch honouring the mask."""

from __future__ import annotations

import pytest

from learner.batch import shard
from learner.policy import pad_batch, rollout_logprob_tensor
from rewards.types import Task
from rollout.config import RolloutConfig
from rollout.revision import discounted, feedback_text, join_attempt, needs_revision, trajectory_result
from rollout.types import Completion, ScoredCompletion, TrainingSample
from sandbox.types import Verdict


def completion(prompt, ids, lps, text="x\n}\n", version=3, finish="stop") -> Completion:
    return Completion(("k", 0), 0, tuple(prompt), tuple(ids), tuple(lps), text, finish, version)


def scored(c: Completion, verdict=Verdict.WRONG_ANSWER, reward=1.5, **kw) -> ScoredCompletion:
    return ScoredCompletion(c, "t", verdict, verdict is Verdict.OK, reward, {"compile": 1.0, "tests": reward - 1.0} if reward is not None else {},
                            **kw)


def test_join_puts_feedback_inside_the_completion_with_mask_zero_and_logprob_zero():
    first = completion((1, 2, 3), (4, 5), (-0.1, -0.2), version=3)
    second = completion((1, 2, 3, 4, 5, 7, 8), (9,), (-0.3,), text="y\n}\n", version=4, finish="length")
    joined = join_attempt(first, second)
    assert joined.prompt_ids == (1, 2, 3)
    assert joined.completion_ids == (4, 5, 7, 8, 9)
    assert joined.loss_mask == (1, 1, 0, 0, 1)
    assert joined.rollout_logprobs == (-0.1, -0.2, 0.0, 0.0, -0.3)
    assert (joined.text, joined.finish_reason, joined.version, joined.ident) == ("y\n}\n", "length", 3, (("k", 0), 0))
    third = completion((1, 2, 3, 4, 5, 7, 8, 9, 6), (10, 11), (-0.4, -0.5), version=5)
    again = join_attempt(joined, third)
    assert again.completion_ids == (4, 5, 7, 8, 9, 6, 10, 11)
    assert again.loss_mask == (1, 1, 0, 0, 1, 0, 1, 1)


def test_join_refuses_an_attempt_that_was_not_conditioned_on_the_trajectorys_tokens():
    first = completion((1, 2, 3), (4, 5), (-0.1, -0.2))
    retokenised = completion((1, 2, 3, 45, 7), (9,), (-0.3,))  # "4","5" merged into one token: drift
    with pytest.raises(ValueError, match="prefix_ids"):
        join_attempt(first, retokenised)


@pytest.mark.parametrize("reward,turns,discount,expected", [
    (6.0, 1, 0.5, 6.0), (6.0, 2, 0.5, 3.0), (6.0, 3, 0.5, 1.5), (6.0, 3, 1.0, 6.0),
    (-1.0, 3, 0.5, -1.0), (0.0, 2, 0.5, 0.0), (None, 2, 0.5, None)])
def test_discount_scales_a_success_per_extra_attempt_and_never_softens_a_failure(reward, turns, discount, expected):
    assert discounted(reward, turns, discount) == expected


def test_trajectory_result_keeps_components_summing_to_the_discounted_reward():
    first = scored(completion((1,), (2,), (-0.1,)))
    last = scored(completion((1, 2, 3), (4,), (-0.2,)), Verdict.OK, reward=6.0)
    out = trajectory_result(first, join_attempt(first.completion, last.completion), last,
                            [{"turn": 1}, {"turn": 2}], discount=0.75)
    assert out.reward == 4.5 and out.components["revision"] == -1.5
    assert sum(out.components.values()) == pytest.approx(out.reward)
    assert (out.turns, out.first_passed, out.passed) == (2, False, True)


def test_only_scored_failures_are_revised():
    c = completion((1,), (2,), (-0.1,))
    assert needs_revision(scored(c, Verdict.WRONG_ANSWER))
    assert needs_revision(scored(c, Verdict.COMPILE_ERROR, reward=-1.0))
    assert not needs_revision(scored(c, Verdict.OK, reward=6.0))
    assert not needs_revision(scored(c, Verdict.SANDBOX_ERROR, reward=None))  # the infrastructure's, not the model's


def test_feedback_shows_the_first_error_in_the_attempts_lines_and_repeats_the_prompt():
    task = Task("t", "function", "int add(int a, int b) {", "assert(add(1, 2) == 3);", entry_point="add")
    c = completion((1,), (2,), (-0.1,), text="  return a - b;\n}")  # no final newline: the feedback starts one
    diag = "completion:2:3: error: expected ';' before '}' token\ncompletion:2:3: note: something\n"
    text = feedback_text(scored(c, Verdict.COMPILE_ERROR, reward=-1.0, diagnostics=diag), task, task.prompt)
    assert text.startswith("\n// TASK: Fix the bug in `add` (it does not compile)\nstruct DebugState {\n")
    assert "  // compiler: line 2:3: error: expected ';' before '}' token\n" in text
    assert "note:" not in text and text.endswith("};\nint add(int a, int b) {")


def test_feedback_locates_a_sanitizer_finding_in_the_attempt_not_in_solution_cpp():
    task = Task("t", "function", "int f(int* p) {", "assert(f(0) == 0);", entry_point="f")
    finding = {"tool": "AddressSanitizer", "kind": "heap-buffer-overflow", "file": "solution.cpp", "line": 41,
               "completion_line": 3, "function": "f(int*)", "message": ""}
    c = completion((1,), (2,), (-0.1,), text="  return p[4];\n}\n")
    text = feedback_text(scored(c, Verdict.RUNTIME_ERROR, reward=1.0, sanitizer=finding,
                                detail="heap-buffer-overflow; 0/1 asserts passed"), task, task.prompt)
    assert "(heap-buffer-overflow found by the sanitizer)" in text
    assert "// sanitizer: AddressSanitizer: heap-buffer-overflow at line 3 in f(int*)" in text
    assert "line 41" not in text


def test_the_learner_trains_only_the_policys_tokens_of_a_multi_turn_sample():
    joined = TrainingSample((1, 2), (3, 4, 8, 8, 5), (-0.1, -0.2, 0.0, 0.0, -0.3), 1.0, loss_mask=(1, 1, 0, 0, 1))
    plain = TrainingSample((1, 2, 3), (6,), (-0.4,), -1.0)
    ids, attn, comp = pad_batch([joined, plain], pad_id=0)
    # row 0: position t predicts token t+1; completion tokens sit at 2..6, predicted from 1..5
    assert comp[0].tolist() == [0, 1, 1, 0, 0, 1]
    assert comp[1].tolist() == [0, 0, 1, 0, 0, 0]
    assert rollout_logprob_tensor([joined], ids.shape[1])[0].tolist() == pytest.approx([0, -0.1, -0.2, 0, 0, -0.3])
    assert joined.trained_tokens == 3 and plain.trained_tokens == 1
    _, tokens, _ = shard([joined, plain], world=1, micro_batch=2, minibatches=1)
    assert tokens == [4]  # the loss denominator: the policy's tokens only
    assert joined.padding().loss_mask == joined.loss_mask


def test_turns_config_is_checked_early():
    assert RolloutConfig(turns=3).turns == 3
    with pytest.raises(ValueError, match="chat_template"):
        RolloutConfig(turns=2, chat_template=True)
    with pytest.raises(ValueError, match="max_model_len"):
        RolloutConfig(turns=2, max_new_tokens=600, max_model_len=1024)


def test_a_revision_the_sandbox_could_not_score_leaves_the_last_scored_attempt_standing():
    from rewards.tasks import load_embedded
    from rollout.engine_group import EngineGroup, LocalCalls
    from rollout.producer import Producer
    from tests.unit.rollout.fakes import FakeEngine, FakeScorer

    class LosesRevisions(FakeScorer):
        def __call__(self, items):
            out = super().__call__(items)
            if self.calls > 1:  # every scoring call after the first attempts' (chunk_prompts 0: one call)
                for s in out:
                    s.reward, s.verdict, s.passed = None, "SANDBOX_ERROR", False
            return out

    tasks = load_embedded()[:3]
    producer = Producer(EngineGroup(lambda: FakeEngine([]), 1, LocalCalls()), LosesRevisions(), tasks,
                        RolloutConfig(turns=3, samples_per_prompt=4), seed=0, staleness=0)
    scored, stats = producer.rollout(tasks, [("eval", i) for i in range(3)], 4, [1, 2, 3])
    producer.close()
    failed = [s for s in scored if not s.first_passed]
    assert failed and stats["revision_unscored"] == len(failed) == stats["revision_requests"]
    for s in failed:  # the first attempt's reward and tokens, not a None that would drop it from its group
        assert s.turns == 1 and s.reward == s.attempts[0]["reward"] is not None and not s.completion.loss_mask
        assert s.attempts[0]["feedback"] == ""
