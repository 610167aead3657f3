"""`--config` takes a file, a preset name of the stage, or configs/<stage>/<name>.yaml from any directory; a
job's relative run.out_dir is made absolute (with a warning inside Ray's working-dir copy); the head's env file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from configs.loader import PRESETS, ConfigError, load_config, resolve_preset
from learner.config import RLVRConfig, absolute_out_dir
from learner.head import env_lines


def test_a_preset_name_resolves_inside_the_package_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_preset("tiny-cpu", "rlvr") == PRESETS / "rlvr" / "tiny-cpu.yaml"
    assert resolve_preset("configs/rlvr/tiny-cpu.yaml", "rlvr") == PRESETS / "rlvr" / "tiny-cpu.yaml"
    assert load_config(RLVRConfig, "tiny-cpu", ["run.steps=5"], stage="rlvr").run.steps == 5


def test_a_local_file_wins_over_a_preset_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("tiny-cpu").write_text("run: {steps: 7}\n")
    assert load_config(RLVRConfig, "tiny-cpu", stage="rlvr").run.steps == 7


def test_an_unknown_preset_lists_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"'tiny-gpu': no such file, and not a rlvr preset \(presets: gpu-1x, .*tiny-cpu\)"):
        load_config(RLVRConfig, "tiny-gpu", stage="rlvr")
    with pytest.raises(ConfigError, match="config file mine.yaml does not exist"):
        load_config(RLVRConfig, "mine.yaml", stage="rlvr")


def test_out_dir_is_made_absolute_and_a_ray_working_dir_copy_warns():
    assert absolute_out_dir("/data/run", Path("/anywhere")) == ("/data/run", None)
    assert absolute_out_dir("runs/x", Path("/home/u/repo")) == ("/home/u/repo/runs/x", None)
    copy = Path("/tmp/ray/session_1/runtime_resources/working_dir_files/_ray_pkg_ab12")
    path, warning = absolute_out_dir("runs/x", copy)
    assert path == str(copy / "runs/x") and "Ray deletes" in warning and "run.out_dir=$PWD/runs/x" in warning


def test_the_env_file_exports_what_the_job_cli_needs():
    text = env_lines({"dashboard": "http://127.0.0.1:8265", "token": "t0k'en"}, "/opt/my venv/bin")
    assert "export RAY_ADDRESS=http://127.0.0.1:8265\n" in text and "export RAY_AUTH_MODE=token\n" in text
    assert "export RAY_AUTH_TOKEN='t0k'\"'\"'en'\n" in text  # quoted for the shell
    assert "export PATH='/opt/my venv/bin':\"$PATH\"" in text


def test_help_lists_every_key_with_type_default_and_whole_description(capsys):
    from learner.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "  run.steps (int, default 3): GRPO steps\n" in out
    assert "  tasks.split.seed (int, default 0): seed of the split's hash" in out
    for field in ("rollout.top_p", "algo.kl_coef", "learner.placement", "reward.weights.tests"):
        assert f"  {field} (" in out
    # the description is the model's, whole: not cut at the first line of the module docstring
    assert "one JSON summary (checkpoint, steps" in out


def test_print_config_prints_the_resolved_config_and_runs_nothing(capsys, tmp_path, monkeypatch):
    from learner.__main__ import main

    monkeypatch.chdir(tmp_path)
    assert main(["--config", "tiny-cpu", "--print-config", "run.steps=4", "algo.lr=1e-5"]) == 0
    out = capsys.readouterr().out
    cfg = json.loads(out.strip().splitlines()[-1])["config"]
    assert cfg["run"]["steps"] == 4 and cfg["algo"]["lr"] == 1e-5 and cfg["rollout"]["samples_per_prompt"] == 8
    assert "  steps: 4\n" in out  # the YAML above it, a preset one can save
    assert not (tmp_path / "runs").exists()


def test_an_unexpected_exception_still_ends_with_the_json_line(capsys):
    from configs.loader import config_cli

    def boom(cfg):
        raise KeyError("bug")

    assert config_cli([], prog="x", description="", default_config="configs/rlvr/tiny-cpu.yaml", model=RLVRConfig,
                      run=boom, example="", failures=(ValueError,)) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1]) == {"error": "unexpected KeyError: 'bug'"}
    assert "Traceback" in captured.err


def test_run_cli_turns_a_crash_into_the_json_line_and_exit_1(capsys):
    from configs.loader import run_cli

    assert run_cli(lambda: 0) == 0
    assert run_cli(lambda: 1 / 0) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1]) == {"error": "unexpected ZeroDivisionError: division by zero"}
    assert "Traceback" in captured.err


def test_flat_settings_and_their_differences_by_hand():
    from configs.base import check_resume, flat_settings, settings_diff

    data = {"a": {"b": 1, "c": {"d": [1, 2]}}, "run": {"steps": 3, "seed": 0}, "e": {}}
    assert flat_settings(data, ("run.steps", "a.c.")) == {"a.b": 1, "run.seed": 0, "e": {}}
    assert settings_diff({"x": 1, "y": 2}, {"x": 1, "y": 3, "z": True}) == ["y: 2 -> 3", "z: (absent) -> true"]
    assert check_resume(None, {"x": 1}, "ckpt", True) == []  # a checkpoint from before records: as before
    assert check_resume({"x": 1}, {"x": 1}, "ckpt", True) == []
    assert check_resume({"x": 1}, {"x": 2}, "ckpt", "force") == ["x: 1 -> 2"]
    with pytest.raises(ValueError, match=r"ckpt was trained under other settings.*\n  x: 1 -> 2\n"):
        check_resume({"x": 1}, {"x": 2}, "ckpt", True)


def test_several_configs_compose_in_order_and_override_lists_merge_key_by_key(tmp_path, monkeypatch):
    from configs.loader import merge_override_lists
    from scripts.pipeline import PipelineConfig

    assert merge_override_lists(["a=1", "b.c=2", "d=3"], ["b.c=5", "e=6"]) == ["a=1", "b.c=5", "d=3", "e=6"]
    monkeypatch.chdir(tmp_path)
    Path("more.yaml").write_text("run: {steps: 9}\nalgo: {lr: 3.0e-5}\n")
    Path("most.yaml").write_text("run: {steps: 11}\n")
    cfg = load_config(RLVRConfig, ["tiny-cpu", "more.yaml", "most.yaml"], ["algo.kl_coef=0.01"], stage="rlvr")
    assert (cfg.run.steps, cfg.algo.lr, cfg.algo.kl_coef, cfg.rollout.max_new_tokens) == (11, 3e-5, 0.01, 96)
    # `make demo ARGS="rlvr.overrides=[run.steps=2]"` changes one key and keeps the preset's others
    pipe = load_config(PipelineConfig, "ci", ["rlvr.overrides=[run.steps=2]"], stage="pipeline")
    assert pipe.rlvr.overrides[0] == "run.steps=2" and "algo.lr=3.0e-4" in pipe.rlvr.overrides
    assert len(pipe.rlvr.overrides) == 5


def test_a_direct_run_refuses_a_job_submission_address(monkeypatch):
    from learner.driver import connect_ray

    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    with pytest.raises(ValueError, match="is a dashboard \\(job submission\\) address.*run.ray_address=<host>:6379"):
        connect_ray(None)
    with pytest.raises(ValueError, match="'https://head:8265' is a dashboard"):
        connect_ray("https://head:8265")
