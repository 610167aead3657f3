"""One loader for every stage: a YAML preset, then dotted `key=value` overrides, validated by pydantic.

Errors name the field and the file (or the override) they came from; unknown keys are errors.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A config could not be loaded; the message names the source and the field."""


def cli_error(message: str, code: int, label: str = "error") -> int:
    """How every CLI fails: a readable line on stderr, the `{"error": ...}` JSON line last on stdout (what
    scripts parse), and the exit code to return (2: bad config, 1: bad input or a failed run)."""
    print(f"{label}: {message}", file=sys.stderr)
    print(json.dumps({"error": message}))
    return code


def jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line of a JSONL file (gzip when it ends in .gz); a
    line that is not JSON is an error naming the file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["a.b=3", "c=[1, 2]"]` -> `{"a": {"b": 3}, "c": [1, 2]}`; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads "3e-4" as a string
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is already set to a value")
            node = child
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of fields, got {type(data).__name__}")
    return data


PRESETS = Path(__file__).resolve().parent  # the shipped presets: configs/<stage>/<name>.yaml, checkout or installed


def resolve_preset(path: str | Path, stage: str | None = None) -> Path:
    """What `--config` names: a YAML file (relative to the working directory), a preset name of `stage`
    (`tiny-cpu` -> configs/<stage>/tiny-cpu.yaml), or `configs/<stage>/<name>.yaml` of the shipped presets
    from any directory (an installed package carries them)."""
    p = Path(path)
    if p.is_file():
        return p
    if stage and "/" not in str(path) and p.suffix not in (".yaml", ".yml"):
        preset = PRESETS / stage / f"{path}.yaml"
        if preset.is_file():
            return preset
        names = ", ".join(sorted(x.stem for x in (PRESETS / stage).glob("*.yaml")))
        raise ConfigError(f"--config {str(path)!r}: no such file, and not a {stage} preset (presets: {names})")
    if len(p.parts) > 2 and p.parts[0] == "configs" and PRESETS.joinpath(*p.parts[1:]).is_file():
        return PRESETS.joinpath(*p.parts[1:])
    return p  # reading it names the missing file


def load_config(model: type[ModelT], path: str | Path | None = None, overrides: list[str] = (),
                stage: str | None = None) -> ModelT:
    """Build `model` from a YAML preset (optional; a file, or a preset name of `stage`) plus overrides; raise
    ConfigError naming the field."""
    data = _read_yaml(resolve_preset(path, stage)) if path else {}
    data = _merge(data, parse_overrides(list(overrides)))
    source = str(path) if path else "defaults"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "<root>"
            lines.append(f"  {field}: {err['msg']}")
        raise ConfigError(f"{source} (+ {len(overrides)} overrides): invalid {model.__name__}\n"
                          + "\n".join(lines)) from None


def config_cli(argv: list[str] | None, *, prog: str, description: str, default_config: str, model: type[ModelT],
               run: Callable[[ModelT], dict], example: str, failures: tuple[type[Exception], ...],
               log_format: str = "%(asctime)s %(name)s %(levelname)s %(message)s") -> int:
    """A one-command CLI: `--config preset.yaml key=value ...` -> `run(config)` -> its summary as the last stdout
    line. A bad config exits 2 and a failure in `failures` exits 1, both through `cli_error`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    stage = Path(default_config).parts[1]
    parser.add_argument("--config", default=default_config,
                        help=f"YAML file, or a preset name of configs/{stage}/ (e.g. {Path(default_config).stem})")
    parser.add_argument("overrides", nargs="*", help=f"dotted key=value, e.g. {example}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=log_format, stream=sys.stderr)
    try:
        cfg = load_config(model, args.config, args.overrides, stage=stage)
    except ConfigError as exc:
        return cli_error(str(exc), 2, "config error")
    try:
        summary = run(cfg)
    except failures as exc:
        return cli_error(str(exc), 1)
    print(json.dumps(summary))
    return 0
