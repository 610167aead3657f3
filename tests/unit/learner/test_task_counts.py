"""What RLVR says about its tasks and its steps, against hand values: the start-up counts (loaded, dropped by
tier, train, held out, how often each task is prompted, checked against the real prompt order), the count of
steps that trained, and the warning for a step that did not."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from learner.driver import steps_trained, untrained_warning
from learner.task_counts import count_tasks
from rollout.producer import prompt_order


def test_the_issue_case_two_usable_tasks_one_dropped_by_tier_none_held_out():
    c = count_tasks("mine.jsonl", [0, 1, 0], [0], train=2, heldout=0, prompts_per_step=8, steps=2)
    assert (c.loaded, c.dropped_by_tier, c.dropped_tiers, c.train, c.heldout) == (3, 1, [1], 2, 0)
    assert c.epochs_per_step == 4.0 and c.prompts_per_task == (8, 8)
    assert c.line() == ("tasks: 3 loaded from mine.jsonl; tiers [0] kept 2, dropped 1 (tiers 1); 2 train, 0 held out "
                        "(no held-out evaluation: the summary's eval_* are null); 8 prompts per step = each train "
                        "task 4x per step; over 2 steps each train task is prompted 8 times")


def test_the_tiny_cpu_preset_by_hand():
    # 68 embedded tasks (24 of tier 0, 26 of tier 1, 18 of tier 2); tiers [0]; 16 train + 8 held out
    c = count_tasks("embedded", [0] * 24 + [1] * 26 + [2] * 18, [0], 16, 8, prompts_per_step=8, steps=3)
    assert (c.dropped_by_tier, c.dropped_tiers, c.epochs_per_step, c.prompts_per_task) == (44, [1, 2], 0.5, (1, 2))
    assert c.line() == ("tasks: 68 loaded from embedded; tiers [0] kept 24, dropped 44 (tiers 1, 2); 16 train, "
                        "8 held out; 8 prompts per step = 0.5 passes over the train tasks; over 3 steps each train "
                        "task is prompted 1-2 times")


def test_no_tier_filter_untiered_tasks_dropped_and_a_fractional_repeat():
    c = count_tasks("he.jsonl", [None, None, 1], None, 3, 0, prompts_per_step=4, steps=1)
    assert (c.dropped_by_tier, c.dropped_tiers) == (0, [])
    assert "no tier filter" in c.line()
    c = count_tasks("he.jsonl", [None, 2, None, 0, 1], [0, 1], 2, 0, prompts_per_step=3, steps=1)
    assert (c.dropped_by_tier, c.dropped_tiers) == (3, [2, None])
    assert "dropped 3 (tiers 2, none)" in c.line()
    assert "1.5 passes over the train tasks (tasks repeat within a step)" in c.line()
    assert c.prompts_per_task == (1, 2)  # 3 prompts over 2 tasks
    json.dumps(c.as_dict())  # goes into the summary's last line as is


@pytest.mark.parametrize("train, per_step, steps", [(2, 8, 2), (3, 4, 5), (16, 8, 3), (7, 3, 4), (5, 5, 2)])
def test_prompts_per_task_is_what_the_sampler_draws(train, per_step, steps):
    drawn = Counter(i for s in range(steps) for i in prompt_order(train, s, per_step, seed=3))
    c = count_tasks("x", [0] * train, None, train, 0, per_step, steps)
    assert (min(drawn[i] for i in range(train)), max(drawn.values())) == c.prompts_per_task
    if per_step % train == 0:  # whole passes per step: each task exactly that often in every step
        for s in range(steps):
            assert set(Counter(prompt_order(train, s, per_step, seed=3)).values()) == {per_step // train}


def test_steps_trained_counts_steps_with_samples():
    records = [{"step": 0, "trained_samples": 16}, {"step": 1, "trained_samples": 0}, {"step": 2}]
    assert steps_trained(records) == 1
    assert steps_trained([]) == 0


def test_the_untrained_warning_names_the_cause():
    msg = untrained_warning(1, 2, {"groups": 8, "groups_filtered": 8, "unscored": 0})
    assert msg.startswith("step 2/2 trained on 0 samples: all 8 groups were dropped (rewards all equal")
    assert msg.endswith("no gradient step ran, the policy is unchanged")
    assert "dynamic sampling kept none" in untrained_warning(0, 3, {"groups": 0, "groups_filtered": 0, "unscored": 0})


def test_skipped_records_are_counted_in_the_line():
    c = count_tasks("mine.yaml", [0, 0], None, 2, 0, prompts_per_step=2, steps=1, skipped=3)
    assert c.line().startswith("tasks: 2 loaded from mine.yaml (3 invalid records skipped: tasks.lenient); ")
    assert c.as_dict()["skipped"] == 3


def test_split_tasks_skips_invalid_records_only_when_lenient(tmp_path):
    from learner.config import RLVRConfig
    from learner.driver import split_tasks

    path = tmp_path / "mine.yaml"
    path.write_text("- task_id: a\n  kind: compile\n  prompt: int a;\n- task_id: b\n  kind: compile\n  prompt: int b;\n"
                    "- task_id: c\n  kind: compile\n  prompt: int c;\n  chekcer: exact\n")
    cfg = RLVRConfig.model_validate({"tasks": {"source": str(path), "split": {"heldout_fraction": 0.0}}})
    with pytest.raises(ValueError, match=r"mine\.yaml:7 \(item 3\): task c: unknown field 'chekcer'"):
        split_tasks(cfg)
    lenient = cfg.model_copy(update={"tasks": cfg.tasks.model_copy(update={"lenient": True})})
    selection = split_tasks(lenient)
    assert len(selection.train) == 2 and selection.counts.skipped == 1
