"""Pure parts of rollout/ against hand values: prompt order, the engine group's order and retry bookkeeping,
rollout statistics, rollout dump selection; and the one held-out split every stage shares."""

from __future__ import annotations

import json

import pytest

from configs.base import TaskSplit, check_lineage
from rollout.dump import parse_policy, select_groups
from rollout.engine_group import EngineDied, EngineGroup, LocalCalls
from rollout.producer import prompt_order, refill_order
from rollout.stats import informative, reward_stats
from rollout.types import Request
from tests.unit.rollout.fakes import FakeEngine
from tests.unit.rollout.records import scored


def test_prompt_order_is_a_pure_function_of_the_step_and_covers_each_epoch():
    steps = [prompt_order(10, s, 4, seed=3) for s in range(5)]  # 20 positions = 2 epochs of 10
    assert steps == [prompt_order(10, s, 4, seed=3) for s in range(5)]
    flat = [i for s in steps for i in s]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != list(range(10))  # shuffled
    assert prompt_order(10, 0, 4, seed=4) != steps[0]


def test_refill_draws_are_seeded_per_step_and_round():
    assert refill_order(10, 3, 1, 5, seed=0) == refill_order(10, 3, 1, 5, seed=0)
    assert refill_order(10, 3, 1, 5, seed=0) != refill_order(10, 3, 2, 5, seed=0)
    assert all(0 <= i < 10 for i in refill_order(10, 3, 1, 50, seed=0))


def test_reward_stats_by_hand():
    samples = [scored("a", 0, 1.0), scored("a", 1, -1.0, verdict="COMPILE_ERROR", passed=False),
               scored("a", 2, None, verdict="SANDBOX_ERROR", passed=False), scored("a", 3, 3.0, truncated=True)]
    st = reward_stats(samples)
    assert st["reward_mean"] == 1.0 and st["compile_rate"] == pytest.approx(2 / 3) and st["pass_rate"] == pytest.approx(2 / 3)
    assert st["verdicts"] == {"OK": 2, "COMPILE_ERROR": 1, "SANDBOX_ERROR": 1} and st["sandbox_errors"] == 1
    assert st["truncated_fraction"] == 0.25
    assert set(reward_stats(samples, prefix="eval_")) == {"eval_reward_mean", "eval_reward_std", "eval_pass_rate",
                                                         "eval_compile_rate", "eval_reward_compile_mean"}


def test_informative_needs_two_rewards_that_differ():
    assert informative([scored("a", 0, 1.0), scored("a", 1, 0.0)])
    assert not informative([scored("a", 0, 1.0), scored("a", 1, 1.0)])
    assert not informative([scored("a", 0, 1.0), scored("a", 1, None)])


def test_engine_group_returns_completions_in_request_order_over_several_engines():
    group = EngineGroup(lambda: FakeEngine([]), 3, LocalCalls())
    requests = [Request((0, i), "p", 2, seed=i) for i in range(7)]
    out = group.generate(requests)
    assert [(c.key, c.index) for c in out] == [((0, i), j) for i in range(7) for j in range(2)]


def test_engine_group_gives_up_after_max_attempts_with_a_clear_error():
    class AlwaysDead(FakeEngine):
        def generate(self, requests):
            raise EngineDied("gone")

    group = EngineGroup(lambda: AlwaysDead([]), 1, LocalCalls(), max_attempts=3)
    with pytest.raises(RuntimeError, match="rollout engine 0 failed 3 times"):
        group.generate([Request((0, 0), "p", 2, 0)])
    assert group.restarts == 2


def test_dump_policy_and_best_worst_group_selection():
    assert parse_policy("all") is None and parse_policy("none") == 0 and parse_policy("sample:3") == 3
    with pytest.raises(ValueError, match="run.log_rollouts"):
        parse_policy("sample:x")
    samples = [scored(g, i, float(r)) for g, rewards in (("a", (1, 1)), ("b", (5, 3)), ("c", (0, 0)), ("d", (2, 2)))
               for i, r in enumerate(rewards)]
    keys = lambda chosen: sorted({s.key[0] for s in chosen})  # noqa: E731
    assert keys(select_groups(samples, 2)) == ["b", "c"]  # best (mean 4) and worst (mean 0)
    assert keys(select_groups(samples, 3)) == ["a", "b", "c"]  # 1 best, 2 worst
    assert len(select_groups(samples, None)) == len(samples) and keys(select_groups(samples, 10)) == ["a", "b", "c", "d"]


PINNED_HELDOUT = ["task1", "task9", "task14", "task15", "task17"]  # sha256("0:" + id) < 0.25 of 2**64


def test_the_split_is_one_decision_and_a_different_one_changes_the_held_out_set():
    ids = [f"task{i}" for i in range(400)]
    default, other = TaskSplit(), TaskSplit(heldout_fraction=0.5, seed=7)
    held = {i for i in ids if default.is_heldout(i)}
    assert 0.15 < len(held) / len(ids) < 0.35  # about the fraction
    # stable across versions and machines: pinned (sha256 of "seed:task_id"), as every stage has split so far
    assert sorted(held, key=lambda i: int(i[4:]))[:5] == PINNED_HELDOUT
    assert {i for i in ids if other.is_heldout(i)} != held
    with pytest.raises(ValueError):
        TaskSplit(heldout_fraction=1.0)


def test_no_stage_trains_on_a_task_another_stage_holds_out_when_the_split_changes(tmp_path):
    """Change the split in every stage's config; pretraining's corpus, SFT's data and RLVR's prompts then all
    leave out exactly the held-out set that RLVR's and the evaluator's held-out tasks are."""
    from learner.config import RLVRConfig
    from learner.driver import split_tasks
    from learner.evaluate import EvalConfig, load_eval_tasks
    from pretrain.corpus import CorpusConfig, _embedded_sources
    from rewards.tasks import load_embedded
    from sft.dataset import DataConfig, _embedded_samples

    split = TaskSplit(heldout_fraction=0.5, seed=11)
    all_ids = {t.task_id for t in load_embedded()}
    heldout = {i for i in all_ids if split.is_heldout(i)}
    assert heldout and heldout != {i for i in all_ids if TaskSplit().is_heldout(i)}

    corpus = CorpusConfig(split=split.model_dump())
    task_source = [s for s in _embedded_sources({".cpp"}, None, corpus.split) if s.name == "embedded/tasks"][0]
    pretrain_ids = {path for path, _ in task_source.files}
    sft_ids = {s.meta["task_id"] for s in _embedded_samples(DataConfig(kinds=["task"], split=split.model_dump()))}
    rl = split_tasks(RLVRConfig(tasks={"split": split.model_dump()}))
    train, rl_heldout = rl.train, rl.heldout
    eval_ids = {t.task_id for t in load_eval_tasks(EvalConfig(heldout_fraction=0.5, split_seed=11))}

    assert pretrain_ids and sft_ids and train
    for stage, trained in (("pretrain", pretrain_ids), ("sft", sft_ids), ("rlvr", {t.task_id for t in train})):
        assert not trained & heldout, f"{stage} trains on held-out tasks"
    assert {t.task_id for t in rl_heldout} == heldout == eval_ids


def test_a_stage_refuses_a_checkpoint_trained_under_another_split(tmp_path):
    stage = tmp_path / "sft"
    (stage / "final").mkdir(parents=True)
    (stage / "final" / "config.json").write_text(json.dumps({"model_type": "llama"}))  # HF config: no split
    (stage / "config.json").write_text(json.dumps({"data": {"split": {"heldout_fraction": 0.25, "seed": 0}}}))
    check_lineage(stage / "final", TaskSplit(), "tasks.split")  # same split: fine
    with pytest.raises(ValueError, match=r"tasks.split: .*'seed': 3.*recorded.*'seed': 0"):
        check_lineage(stage / "final", TaskSplit(seed=3), "tasks.split")
    check_lineage(tmp_path / "elsewhere", TaskSplit(seed=3), "tasks.split")  # no record: nothing to check


def test_the_embedded_held_out_set_is_the_one_every_earlier_run_used():
    from rewards.tasks import load_embedded

    held = sorted(t.task_id for t in load_embedded() if TaskSplit().is_heldout(t.task_id))
    assert held[:4] == ["crucible/t0/average_of_two", "crucible/t0/bool_xor", "crucible/t0/compile_color_enum",
                        "crucible/t0/count_decimal_digits"]


def test_engine_group_refuses_duplicate_keys_and_short_groups():
    group = EngineGroup(lambda: FakeEngine([]), 2, LocalCalls())
    with pytest.raises(ValueError, match="share a group key"):
        group.generate([Request(("eval", 0), "p", 2, 0), Request(("eval", 0), "q", 2, 1)])

    class Short(FakeEngine):
        def generate(self, requests):
            return super().generate(requests)[:-1]

    with pytest.raises(RuntimeError, match=r"returned 1 completions for request \(0, 0\), asked for 2"):
        EngineGroup(lambda: Short([]), 1, LocalCalls()).generate([Request((0, 0), "p", 2, 0)])


def test_a_closed_engine_group_does_not_start_replacements():
    class Dies(FakeEngine):
        def generate(self, requests):
            raise EngineDied("gone")

    spawned = []
    group = EngineGroup(lambda: spawned.append(1) or Dies([]), 1, LocalCalls())
    group.close()
    with pytest.raises(EngineDied, match="closed"):
        group.generate([Request((0, 0), "p", 2, 0)])
    assert len(spawned) == 1 and group.restarts == 0


def test_lineage_is_read_from_an_rlvr_checkpoint_three_levels_down(tmp_path):
    run = tmp_path / "rlvr"
    policy = run / "checkpoints" / "step_000003" / "policy"
    policy.mkdir(parents=True)
    (policy / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (run / "config.json").write_text(json.dumps({"tasks": {"split": {"heldout_fraction": 0.1, "seed": 0}}}))
    with pytest.raises(ValueError, match="recorded"):
        check_lineage(policy, TaskSplit(), "--heldout-fraction")
    check_lineage(policy, TaskSplit(heldout_fraction=0.1), "--heldout-fraction")
    (run / "config.json").write_text("[1, 2]")  # not a stage record: nothing to compare
    check_lineage(policy, TaskSplit(), "--heldout-fraction")


def test_a_checkpoint_trained_on_its_held_out_tasks_is_refused(tmp_path):
    (tmp_path / "sft" / "final").mkdir(parents=True)
    (tmp_path / "sft" / "config.json").write_text(json.dumps(
        {"data": {"include_heldout_tasks": True, "split": {"heldout_fraction": 0.25, "seed": 0}}}))
    with pytest.raises(ValueError, match="trained on its held-out tasks too"):
        check_lineage(tmp_path / "sft" / "final", TaskSplit(), "tasks.split")
    check_lineage(tmp_path / "sft", TaskSplit(), "data.split", own_output=True)  # it may resume itself
