"""The demo pipeline's pure parts against hand-computed values: tier scores, the learning check, stage reuse,
stage failure messages, the eval command line and config errors. The whole pipeline runs in
tests/integration/test_pipeline.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from configs.loader import ConfigError, load_config
from learner.evaluate import EvalConfig
from scripts.pipeline import PipelineConfig, eval_cmd, last_json_line, run_stage
from scripts.pipeline_report import learning_table, tier_scores

REPO = Path(__file__).resolve().parents[2]


def _tier(tasks: int, scored: int, pass1: float, reward: float) -> dict:
    return {"tasks": tasks, "scored": scored, "pass@1": pass1, "reward_mean": reward}


def _eval(by_tier: dict) -> dict:
    return {"summary": {"by_tier": by_tier}}


def test_tier_scores_weight_pass_by_tasks_and_reward_by_samples():
    summary = {"by_tier": {"tier0": _tier(8, 64, 0.5, 1.0), "tier1": _tier(2, 16, 0.0, -1.0)}}
    assert tier_scores(summary, [0]) == {"pass@1": 0.5, "reward_mean": 1.0, "tasks": 8, "samples": 64}
    # (8*0.5 + 2*0) / 10 = 0.4 ; (64*1 + 16*-1) / 80 = 0.6
    assert tier_scores(summary, [0, 1]) == {"pass@1": 0.4, "reward_mean": 0.6, "tasks": 10, "samples": 80}
    assert tier_scores(summary, [2])["pass@1"] is None  # a tier with no held-out task has no score


def test_learning_table_compares_every_seed_with_the_sft_policy():
    evals = {"sft": _eval({"tier0": _tier(8, 64, 0.125, -0.5)}),
             "rlvr/seed-0": _eval({"tier0": _tier(8, 64, 0.25, 0.5)}),
             "rlvr/seed-1": _eval({"tier0": _tier(8, 64, 0.125, -0.375)})}
    runs = [{"seed": 0, "summary": {"eval_reward_first": -0.4, "eval_reward_last": 0.6}},
            {"seed": 1, "summary": {"eval_reward_first": -0.4, "eval_reward_last": -0.3}}]
    by_reward = learning_table(evals, runs, [0], 0.25, "reward_mean")
    assert [s["gain"] for s in by_reward["seeds"]] == [1.0, 0.125]
    assert by_reward["improved_every_seed"] is False  # seed 1 gained 0.125 < 0.25
    assert by_reward["seeds"][0]["learner_eval_reward_last"] == 0.6
    by_pass = learning_table(evals, runs[:1], [0], 0.1, "pass@1")
    assert by_pass["seeds"][0]["gain"] == 0.125 and by_pass["improved_every_seed"] is True


def test_last_json_line_skips_log_lines_after_the_summary_only_if_they_are_not_json():
    assert last_json_line('log\n{"a": 1}\n') == {"a": 1}
    assert last_json_line('{"a": 1}\nINFO done\n') == {"a": 1}
    assert last_json_line("no summary\n") is None


def _echo_cmd(payload: dict, counter: Path) -> list[str]:
    code = f"import json,pathlib;p=pathlib.Path({str(counter)!r});p.write_text(p.read_text()+'x' if p.exists() else 'x');" \
           f"print('log');print(json.dumps({payload!r}))"
    return [sys.executable, "-c", code]


def test_a_stage_that_already_ran_with_the_same_command_is_reused(tmp_path):
    counter, record = tmp_path / "runs", tmp_path / "stage" / "stage.json"
    first = run_stage("s", _echo_cmd({"checkpoint": "c"}, counter), record)
    again = run_stage("s", _echo_cmd({"checkpoint": "c"}, counter), record)
    assert first["summary"] == again["summary"] == {"checkpoint": "c"}
    assert (first["reused"], again["reused"]) == (False, True) and counter.read_text() == "x"
    (record.parent / "out.bin").write_text("made by the first command")
    # another command runs again, after moving the stage's old outputs aside (never deleted)
    changed = run_stage("s", _echo_cmd({"checkpoint": "d"}, counter), record, stage_dir=record.parent)
    assert changed["summary"] == {"checkpoint": "d"} and counter.read_text() == "xx"
    assert json.loads(record.read_text())["summary"] == {"checkpoint": "d"}
    [old] = tmp_path.glob("stage.stale-*")
    assert (old / "out.bin").read_text() == "made by the first command"
    assert json.loads((old / "stage.json").read_text())["summary"] == {"checkpoint": "c"}


def test_a_failing_stage_names_itself_and_its_error_and_records_nothing(tmp_path):
    record = tmp_path / "stage.json"
    cmd = [sys.executable, "-c", "import json,sys;print(json.dumps({'error': 'model.path: nope'}));sys.exit(2)"]
    with pytest.raises(RuntimeError, match=r"stage sft failed \(exit 2\): model.path: nope"):
        run_stage("sft", cmd, record)
    assert not record.exists()
    with pytest.raises(RuntimeError, match="stage x failed"):  # exit 0 without a summary line is a failure too
        run_stage("x", [sys.executable, "-c", "print('done')"], record)


def test_eval_command_passes_every_eval_setting():
    cmd = eval_cmd("/m", EvalConfig(tiers=[0, 1], samples=3), Path("/o/e.json"))
    assert cmd[1:7] == ["-m", "learner.evaluate", "--model", "/m", "--out", "/o/e.json"]
    args = dict(zip(cmd[7::2], cmd[8::2]))
    assert args["--tiers"] == "0,1" and args["--samples"] == "3" and args["--tasks"] == "embedded-heldout"
    assert "--turns" not in args  # the default adds no flag: commands recorded before the setting still match
    revised = eval_cmd("/m", EvalConfig(turns=2), Path("/o/e.json"))
    assert revised[revised.index("--turns") + 1] == "2"


@pytest.mark.parametrize("preset", sorted((REPO / "configs" / "pipeline").glob("*.yaml")), ids=lambda p: p.stem)
def test_pipeline_presets_load_and_name_existing_stage_presets(preset):
    cfg = load_config(PipelineConfig, preset)
    for path in [s.config for s in (cfg.pretrain, cfg.sft, cfg.rlvr) if s is not None]:
        assert (REPO / path).exists(), path


def test_a_misspelt_pipeline_field_is_named(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("rlvr:\n  seed: [0]\n")
    with pytest.raises(ConfigError, match=r"rlvr\.seed"):
        load_config(PipelineConfig, bad)
    with pytest.raises(ConfigError, match=r"eval\.samples"):
        load_config(PipelineConfig, None, ["eval.samples=0"])


def test_evaluate_cli_names_a_missing_checkpoint_and_a_bad_setting(tmp_path):
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "learner.evaluate", "--model", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "has no config.json" in json.loads(proc.stdout.splitlines()[-1])["error"]
    (tmp_path / "config.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "learner.evaluate", "--model", str(tmp_path), "--samples", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "samples" in json.loads(proc.stdout.splitlines()[-1])["error"]


def test_one_split_reaches_every_stage_and_the_evaluation_cannot_differ():
    from scripts.pipeline import rlvr_cmd

    cfg = PipelineConfig(split={"heldout_fraction": 0.5, "seed": 3}, eval={"heldout_fraction": 0.5, "split_seed": 3})
    assert cfg.split_overrides("corpus.split") == ["corpus.split.heldout_fraction=0.5", "corpus.split.seed=3"]
    job = rlvr_cmd(cfg, "http://h:8265", "/sft/final", 0, Path("/o"))
    assert "tasks.split.heldout_fraction=0.5" in job and "tasks.split.seed=3" in job
    flags = eval_cmd("/m", cfg.eval, Path("/o/e.json"))
    assert flags[flags.index("--heldout-fraction") + 1] == "0.5" and flags[flags.index("--split-seed") + 1] == "3"
    with pytest.raises(ValueError, match="set `split`"):
        PipelineConfig(split={"heldout_fraction": 0.5, "seed": 3})


def test_families_reach_sft_rlvr_and_the_held_out_evaluation_as_one_content_named_file(tmp_path):
    from configs.base import TaskSplit
    from learner.evaluate import load_eval_tasks
    from rewards.tasks import load_tasks
    from scripts.pipeline import eval_config, rlvr_cmd, task_overrides
    from sft.dataset import DataConfig, collect_samples

    cfg = PipelineConfig(out_dir=str(tmp_path), families={"levels": [0, 2], "per_level": 6})
    (sft_flag,) = task_overrides(cfg, "sft")
    path = sft_flag[len("data.task_files=["):-1]
    assert Path(path).parent == tmp_path / "tasks" and task_overrides(cfg, "sft") == [sft_flag]  # same content, same file
    tasks = load_tasks(path)
    assert len(tasks) == 3 * 2 * 6 and {t.tier for t in tasks} == {0, 2}
    job = rlvr_cmd(cfg, "http://h:8265", "/sft/final", 0, tmp_path / "r")
    assert f"tasks.source={path}" in job and "tasks.tiers=null" in job
    evaluated = load_eval_tasks(eval_config(cfg))
    train, heldout = TaskSplit().split(tasks)
    assert eval_config(cfg).tasks == f"heldout:{path}" and [t.task_id for t in evaluated] == \
        sorted(t.task_id for t in heldout)
    # SFT learns the training instances only
    (tmp_path / "empty").mkdir()  # a source without C++ files: the samples are the task file's
    samples = collect_samples(DataConfig(sources=[str(tmp_path / "empty")], kinds=["task"], task_files=[path]))
    assert sorted(s.meta["task_id"] for s in samples) == sorted(t.task_id for t in train)
    with pytest.raises(ValueError, match="task_files file .*missing.jsonl"):
        collect_samples(DataConfig(sources=[str(tmp_path / "empty")], kinds=["task"],
                                   task_files=[str(tmp_path / "missing.jsonl")]))
    other = PipelineConfig(out_dir=str(tmp_path), families={"levels": [0, 2], "per_level": 7})
    assert task_overrides(other, "sft") != [sft_flag]  # another spec: another file, no stage record reused for it
    assert task_overrides(PipelineConfig(out_dir=str(tmp_path)), "rlvr") == []


def test_the_revision_plot_appears_only_for_evaluations_with_feedback():
    from scripts.pipeline_report import plot_revision

    plain = {"sft": {"summary": {"pass@1": 0.3}}}
    revised = {"sft": {"summary": {"pass@1": 0.4, "first_try": {"pass@1": 0.3}}}}
    assert plot_revision(plain) is None
    assert isinstance(plot_revision(revised), str) and len(plot_revision(revised)) > 1000  # a base64 PNG
