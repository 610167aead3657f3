"""MetricsSink (JSONL, TensorBoard, Ray gauges), the HTML report and the Grafana dashboard, all real:
files are read back with their own readers and the gauge is scraped from Ray's metrics endpoint."""

import os

# before anything imports ray: export metrics every second rather than every 10 s so the gauge test is quick
os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")

import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from learner.cluster import free_port  # noqa: E402
from learner.metrics import MetricsSink, gauge_name, read_metrics  # noqa: E402
from learner.report import _new_axes, write_report  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "configs" / "grafana" / "crucible-rlvr.json"
IMG = '<img src="data:image/png;base64,'


def record(step: int) -> dict:
    return {
        "reward_mean": 0.1 * step, "reward_std": 0.05, "reward_tests_mean": 0.05 * step,
        "pass_rate": 0.1 * step, "compile_rate": 0.5 + 0.05 * step,
        "eval_reward_mean": 0.2 * step if step % 2 == 0 else None,  # eval runs every other step
        "verdicts": {"OK": 10 + step, "COMPILE_ERROR": 5 - step, "WRONG_ANSWER": 3},
        "time_generate_s": 20.0, "time_score_s": 5.0, "time_train_s": 30.0, "time_sync_s": 2.0,
        "time_step_s": 58.0 + step, "kl": 0.001 * step, "entropy": 0.9, "clip_fraction": 0.02,
        "staleness": 1, "policy": "ckpt-a",
    }


@pytest.fixture
def logged(tmp_path: Path) -> Path:
    """A run that logged steps 1-5, was killed mid-line, then resumed from step 4 and logged 4-5 again."""
    with MetricsSink(tmp_path, ray_metrics=False) as sink:
        for step in range(1, 6):
            sink.log(step, record(step))
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "reward_me')  # the writer died here
    with MetricsSink(tmp_path, ray_metrics=False) as sink:
        for step in (4, 5):
            sink.log(step, {**record(step), "reward_mean": 9.0 + step})
    return tmp_path


def test_jsonl_keeps_nesting_none_and_the_last_record_per_step(logged: Path):
    lines = (logged / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8  # 5 + the truncated one + 2 resumed, each on its own line
    first = json.loads(lines[0])
    assert first["step"] == 1 and first["eval_reward_mean"] is None
    assert first["verdicts"] == {"OK": 11, "COMPILE_ERROR": 4, "WRONG_ANSWER": 3}
    records = read_metrics(logged / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["reward_mean"] for r in records] == pytest.approx([0.1, 0.2, 0.3, 13.0, 14.0])
    assert records[2]["policy"] == "ckpt-a"
    assert read_metrics(logged / "missing.jsonl") == []


def test_tensorboard_has_flattened_scalars_and_no_none(logged: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = logged / "tensorboard"
    assert list(tb.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"reward_mean", "pass_rate", "verdicts/OK", "verdicts/COMPILE_ERROR", "time_step_s"} <= tags
    assert "policy" not in tags
    # eval ran at steps 2 and 4 only: the None steps were skipped
    assert [e.step for e in acc.Scalars("eval_reward_mean")] == [2, 4]
    assert [e.value for e in acc.Scalars("verdicts/OK")][:3] == [11, 12, 13]
    # the resumed run purged its overlap, so step 4 has one value, the resumed one
    reward = {e.step: e.value for e in acc.Scalars("reward_mean")}
    assert sorted(reward) == [1, 2, 3, 4, 5] and reward[4] == pytest.approx(13.0)


def test_gauge_names_are_prometheus_safe():
    assert gauge_name("reward/mean") == "crucible_rlvr_reward_mean"
    assert gauge_name("verdicts/OK") == "crucible_rlvr_verdicts_ok"  # Ray exports lower case anyway
    assert gauge_name("a.b-c d") == "crucible_rlvr_a_b_c_d"


def test_report_has_every_panel_and_the_last_step(logged: Path, tmp_path: Path):
    out = write_report(logged / "metrics.jsonl", tmp_path / "out" / "report.html",
                       summary={"model": "tiny", "grpo": {"group_size": 8, "lr": 1e-6}})
    page = out.read_text()
    assert page.count(IMG) == 5  # reward, rates, verdicts, phases, health
    assert "Last step (5)" in page and "<th>verdicts/OK</th><td>15</td>" in page
    assert "<th>reward_mean</th><td>14</td>" in page and "<th>policy</th><td>ckpt-a</td>" in page
    assert "<th>grpo.group_size</th><td>8</td>" in page


def test_report_drops_panels_without_series(tmp_path: Path):
    with MetricsSink(tmp_path, tensorboard=False, ray_metrics=False) as sink:
        sink.log(1, {"reward_mean": 0.5})
    page = write_report(tmp_path / "metrics.jsonl", tmp_path / "r.html").read_text()
    assert page.count(IMG) == 1


def test_step_axes_tick_whole_steps_only():
    fig, ax = _new_axes("Reward", "reward")
    ax.plot([0, 1, 2], [0.1, 0.3, 0.2])  # a 3-step run: matplotlib alone ticks 0.25, 0.5, ...
    assert [float(t) for t in ax.get_xticks() if 0 <= t <= 2] == [0.0, 1.0, 2.0]


def test_empty_metrics_give_a_valid_no_data_page_and_the_cli_prints_the_path(tmp_path: Path):
    (tmp_path / "metrics.jsonl").write_text("")
    out = tmp_path / "empty.html"
    proc = subprocess.run([sys.executable, "-m", "learner.report", str(tmp_path / "metrics.jsonl"), str(out)],
                          cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"report": str(out)}
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "no data" in page.lower() and IMG not in page


DASHBOARD_KEYS = [
    "reward_mean", "reward_std", "reward_compile_mean", "reward_warnings_mean", "reward_tests_mean",
    "reward_reasoning_mean", "pass_rate", "compile_rate", "sandbox_errors", "sandbox_retries",
    "gen_tokens_per_s", "train_tokens_per_s", "time_generate_s", "time_score_s", "time_train_s",
    "time_sync_s", "time_step_s", "staleness", "kl", "entropy", "clip_fraction", "logprob_mismatch",
    "eval_reward_mean", "eval_pass_rate",
]


def test_grafana_dashboard_covers_every_metric():
    board = json.loads(DASHBOARD.read_text())
    assert 38 <= board["schemaVersion"] <= 41
    assert any(v["name"] == "datasource" and v["type"] == "datasource" for v in board["templating"]["list"])
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Rewards", "Verdicts & sandbox", "Throughput & phases", "Training health"]
    panels = [p for p in board["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert all("ray_crucible_" in e for e in exprs)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    series = {m for e in exprs for m in re.findall(r"ray_crucible_rlvr_(\w+)", e)}
    assert set(DASHBOARD_KEYS) <= series
    assert any('{__name__=~"ray_crucible_rlvr_verdicts_.*"' in e for e in exprs)
    assert any('__name__=~"ray_crucible_reward_.*"' in e for e in exprs)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.slow  # starting Ray takes 4-10 s on the 2-core reference machine
def test_driver_gauges_reach_rays_metrics_endpoint(tmp_path: Path, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    port = free_port()
    # address="local": always a private instance, never a cluster someone started with `ray start`; its own
    # short temp dir (socket paths are limited to 107 bytes) leaves /tmp/ray/session_latest to that cluster
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
             _metrics_export_port=port, _temp_dir=ray_tmp)
    try:
        sink = MetricsSink(tmp_path, tensorboard=False, run_name="gauge-test")
        sink.log(7, {"reward_mean": 0.625, "verdicts": {"OK": 3}, "kl": None})
        sink.close()
        pattern = re.compile(r'^ray_crucible_rlvr_reward_mean\{[^}]*run="gauge-test"[^}]*\} (\S+)$', re.M)
        deadline, text = time.monotonic() + 30, ""
        while time.monotonic() < deadline and not pattern.search(text):
            time.sleep(0.5)
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                text = ""
        match = pattern.search(text)
        assert match, "ray_crucible_rlvr_reward_mean never appeared at the metrics endpoint"
        assert float(match.group(1)) == pytest.approx(0.625)
        assert re.search(r"^ray_crucible_rlvr_verdicts_ok\{[^}]*\} 3(\.0)?$", text, re.M)
        assert "ray_crucible_rlvr_kl" not in text  # None is not a value
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_wandb_run_is_named_carries_the_config_and_a_resume_continues_it(tmp_path, monkeypatch):
    """W&B itself is not installed here: a stand-in module records what the sink asks of `wandb.init`."""
    import types

    calls, ids = [], iter(["first-id", "second-id"])
    run = types.SimpleNamespace(log=lambda *a, **k: None, finish=lambda: None)
    fake = types.SimpleNamespace(init=lambda **kw: calls.append(kw) or run,
                                 util=types.SimpleNamespace(generate_id=lambda: next(ids)))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    for _ in range(2):  # a run, then its resume in the same out_dir
        MetricsSink(tmp_path, tensorboard=False, ray_metrics=False, wandb_project="proj", run_name="exp-7",
                    config={"algo": {"lr": 1e-5}}).close()
    assert [c["id"] for c in calls] == ["first-id", "first-id"]
    assert all(c["name"] == "exp-7" and c["project"] == "proj" and c["config"] == {"algo": {"lr": 1e-5}}
               and c["resume"] == "allow" for c in calls)


def test_run_name_defaults_to_the_out_dir_and_is_not_a_resume_setting():
    from learner.config import RLVRConfig, resume_settings, run_name

    cfg = RLVRConfig(run={"out_dir": "runs/exp-3"})
    assert run_name(cfg) == "exp-3"
    named = RLVRConfig(run={"out_dir": "runs/exp-3", "name": "lr-sweep-a"})
    assert run_name(named) == "lr-sweep-a" and resume_settings(named) == resume_settings(cfg)
