"""Bad input to `python -m learner` fails fast and clearly: real subprocess runs that must exit with the right
code, name the offending field / file (and line), print one `{"error": ...}` JSON line last, and no traceback.

Config errors exit 2 (before any heavy import); task-file errors exit 1 before Ray starts; the resource check
exits 1 right after Ray connects, before any actor is placed, and leaves no Ray process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[3]
PRESET = REPO / "configs" / "rlvr" / "tiny-cpu.yaml"
GOOD_TASK = {"task_id": "ok", "prompt": "int main() {", "cases": [{"input": "1\n", "output": "1"}], "tier": 0}


def run_learner(*overrides: str, config: str | Path = PRESET, env: dict | None = None,
                timeout: float = 60) -> tuple[int, str, str]:
    """Run the CLI; return (exit code, the last stdout line's "error", stderr)."""
    if env is None:
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "learner", "--config", str(config), *overrides], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no stdout; stderr:\n{proc.stderr[-3000:]}"
    last = json.loads(lines[-1])
    assert set(last) == {"error"}, f"expected an error summary, got {last}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert last["error"] in proc.stderr  # also said on stderr, next to the logs
    return proc.returncode, last["error"], proc.stderr


def preset_with(path: Path, old: str, new: str) -> Path:
    text = PRESET.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


# ---- config errors: exit 2 --------------------------------------------------------------------------------

def test_unknown_key_in_preset_names_key_and_file(tmp_path: Path):
    preset = preset_with(tmp_path / "typo.yaml", "samples_per_prompt:", "samples_per_promt:")
    rc, err, _ = run_learner(config=preset)
    assert rc == 2
    assert "rollout.samples_per_promt" in err and str(preset) in err
    assert "Extra inputs are not permitted" in err


@pytest.mark.parametrize("override, field, says", [
    ("rollout.samples_per_prompt=1", "rollout.samples_per_prompt", "greater than or equal to 2"),
    ("algo.lr=-1", "algo.lr", "greater than 0"),
    ("learner.backend=horovod", "learner.backend", "'local', 'fsdp2' or 'deepspeed'"),
    ("run.staleness=9", "run.staleness", "less than or equal to 4"),
])
def test_invalid_value_names_field(tmp_path: Path, override: str, field: str, says: str):
    rc, err, _ = run_learner(override, f"run.out_dir={tmp_path / 'out'}")
    assert rc == 2
    assert f"{field}: " in err and says in err, err
    assert str(PRESET.relative_to(REPO)) in err or str(PRESET) in err


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path):
    lines = PRESET.read_text().splitlines()
    lineno = next(n for n, line in enumerate(lines, 1) if line.strip().startswith("temperature:"))
    lines[lineno - 1] = "  temperature: 1.0: 2"
    preset = tmp_path / "broken.yaml"
    preset.write_text("\n".join(lines) + "\n")
    rc, err, _ = run_learner(config=preset)
    assert rc == 2
    assert f"{preset}:{lineno}: invalid YAML" in err, err


def test_missing_preset(tmp_path: Path):
    rc, err, _ = run_learner(config=tmp_path / "nope.yaml")
    assert rc == 2
    assert err == f"config file {tmp_path / 'nope.yaml'} does not exist"


def test_missing_task_file_is_a_config_error(tmp_path: Path):
    rc, err, _ = run_learner(f"tasks.source={tmp_path / 'nope.jsonl'}")
    assert rc == 2
    assert f"tasks.source: {tmp_path / 'nope.jsonl'} does not exist" in err


def test_model_path_without_tokenizer_or_config(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    rc, err, _ = run_learner(f"model.path={tmp_path}")
    assert rc == 2
    assert f"model.path: {tmp_path} has no tokenizer" in err, err
    rc, err, _ = run_learner("model.path=/nonexistent")
    assert rc == 2
    assert "model.path: /nonexistent has no config.json" in err, err


@pytest.mark.parametrize("overrides, says", [
    (["learner.backend=local", "learner.world_size=2"], "learner.world_size must be 1 with backend=local"),
    (["model.lora_rank=8", "learner.backend=fsdp2"], "model.lora_rank: LoRA is supported with"),
])
def test_incompatible_learner_settings(overrides: list[str], says: str):
    rc, err, _ = run_learner(*overrides)
    assert rc == 2
    assert says in err, err


# ---- task-file errors: exit 1, before Ray or any output directory ------------------------------------------

def test_empty_task_file(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc, err, _ = run_learner(f"tasks.source={empty}", f"run.out_dir={tmp_path / 'out'}")
    assert rc == 1
    assert err == f"task file {empty} has no usable tasks"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad_record, says", [
    ("{not json", "invalid JSON"),
    ('{"task_id": "b"}', "field 'prompt' is missing"),
    ('{"task_id": "b", "prompt": "int main() {", "cases": 5}', "field 'cases': Input should be a valid list"),
])
def test_malformed_task_record_names_file_and_line(tmp_path: Path, bad_record: str, says: str):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(GOOD_TASK) + "\n\n" + bad_record + "\n")  # line 2 blank, the bad record on 3
    rc, err, _ = run_learner(f"tasks.source={tasks}", f"run.out_dir={tmp_path / 'out'}")
    assert rc == 1
    assert err.startswith(f"{tasks}:3: ") and says in err, err


def test_unreadable_task_file(tmp_path: Path):
    fake_gz = tmp_path / "tasks.jsonl.gz"
    fake_gz.write_text(json.dumps(GOOD_TASK) + "\n")
    rc, err, _ = run_learner(f"tasks.source={fake_gz}", f"run.out_dir={tmp_path / 'out'}")
    assert rc == 1
    assert err.startswith(f"task file {fake_gz}: cannot read it") and "gzip" in err, err


# ---- resources: exit 1 right after Ray connects, no Ray left behind ----------------------------------------

def _ray_processes(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_too_many_engines_or_sandbox_units_fail_fast_naming_both_and_leave_no_ray(tmp_path: Path):
    # run.ray_address=local: a private local instance even if another Ray runs on this machine (plain "auto"
    # would attach to it); RAY_TMPDIR (short: Unix socket paths) marks every process of that instance.
    ray_tmp = tempfile.mkdtemp(prefix="crb-ray-", dir="/tmp")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    try:
        t0 = time.monotonic()
        rc, err, _ = run_learner("rollout.engines=50", "reward.resources={sandbox: 64}", "run.ray_address=local",
                                 f"run.out_dir={tmp_path / 'out'}", env=env, timeout=180)
        assert rc == 1
        assert err.startswith("the run needs ") and " CPUs (rollout.engines x rollout.cpus_per_engine" in err
        assert "but the Ray cluster has" in err
        # a custom resource no node advertises: before, the reward pool waited for it forever
        assert "needs 64 'sandbox' units (reward.workers x reward.resources.sandbox)" in err
        assert list(Path(ray_tmp).glob("ray/session_*")), "the driver started no Ray under RAY_TMPDIR"
        deadline = time.monotonic() + 20
        while (left := _ray_processes(ray_tmp)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"Ray survived the driver: {[' '.join(p.info['cmdline'][:2]) for p in left]}"
        assert time.monotonic() - t0 < 180
    finally:
        for p in _ray_processes(ray_tmp):  # only the instance this test's driver started
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)


# ---- --dry-run: the checks, then exit ----------------------------------------------------------------------

def test_dry_run_checks_tasks_model_and_resources_then_exits(tmp_path: Path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "learner", "--config", "tiny-cpu", "--dry-run",
                           f"run.out_dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["dry_run"] == "ok" and summary["tasks"]["train"] == 16 and summary["tasks"]["heldout"] == 8
    assert summary["vocab_size"] > 0 and summary["resources_checked_against"].startswith("this machine")
    assert not (tmp_path / "run").exists()  # nothing written, nothing started
    # a GPU setting on a machine without one: the same one-line error a run would stop with
    rc, err, _ = run_learner("--dry-run", "learner.gpus_per_worker=1", f"run.out_dir={tmp_path / 'gpu'}", timeout=120)
    assert rc == 1 and "the run needs 1 GPUs" in err and "has 0" in err
