from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from configs import ConfigError, load_config, parse_overrides
from sandbox.config import SandboxConfig


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = 1e-3
    steps: int = 10


class Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "x"
    optim: Inner = Inner()


def test_overrides_parse_yaml_values_into_a_tree():
    assert parse_overrides(["optim.lr=3e-4", "name=run1", "optim.steps=5", "tags=[1, 2]"]) == {
        "optim": {"lr": 3e-4, "steps": 5}, "name": "run1", "tags": [1, 2]}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["novalue"])


def test_preset_plus_overrides(tmp_path: Path):
    preset = tmp_path / "p.yaml"
    preset.write_text("name: base\noptim:\n  lr: 0.1\n")
    cfg = load_config(Cfg, preset, ["optim.steps=7"])
    assert (cfg.name, cfg.optim.lr, cfg.optim.steps) == ("base", 0.1, 7)


def test_errors_name_the_field_and_file(tmp_path: Path):
    preset = tmp_path / "bad.yaml"
    preset.write_text("optim:\n  lr: fast\n  warmup: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, preset)
    msg = str(err.value)
    assert str(preset) in msg and "optim.lr" in msg and "optim.warmup" in msg


def test_invalid_yaml_names_the_line(tmp_path: Path):
    preset = tmp_path / "broken.yaml"
    preset.write_text("name: a\noptim: [1,\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+"):
        load_config(Cfg, preset)


def test_missing_file_and_non_mapping(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Cfg, tmp_path / "list.yaml")


def test_sandbox_preset_loads_and_rejects_bad_backend():
    cfg = load_config(SandboxConfig, Path(__file__).parents[3] / "configs" / "sandbox" / "default.yaml")
    assert cfg.backend == "docker" and cfg.run_limits.to_limits().cpu_s == 5.0
    with pytest.raises(ConfigError, match="backend"):
        load_config(SandboxConfig, None, ["backend=podman"])
    with pytest.raises(ConfigError, match="run_limits.cpu_s"):
        load_config(SandboxConfig, None, ["run_limits.cpu_s=-1"])
