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
import traceback
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


def run_cli(main: Callable[[], int]) -> int:
    """Every CLI's `__main__`: an exception `main` did not expect (a bug, not bad input) still ends the output
    with the `{"error": ...}` JSON line, exit 1, its traceback on stderr for the report."""
    try:
        return main()
    except Exception as exc:
        traceback.print_exc()
        return cli_error(f"unexpected {type(exc).__name__}: {exc}", 1)


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


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def _is_override_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and _OVERRIDE.match(v) for v in value)


def merge_override_lists(base: list[str], extra: list[str]) -> list[str]:
    """Two lists of `key=value` overrides (a pipeline stage's `overrides`) merged key by key: `extra` replaces
    the value of a key `base` sets and appends new keys, in order; `base`'s other keys stay."""
    merged = {item.partition("=")[0]: item for item in base}
    merged.update({item.partition("=")[0]: item for item in extra})
    return list(merged.values())


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        elif _is_override_list(value) and _is_override_list(merged.get(key)):
            merged[key] = merge_override_lists(merged[key], value)
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


def load_config(model: type[ModelT], path: str | Path | list | None = None, overrides: list[str] = (),
                stage: str | None = None) -> ModelT:
    """Build `model` from YAML presets (optional; each a file or a preset name of `stage`; several compose in
    order, later ones winning key by key) plus overrides; raise ConfigError naming the field."""
    paths = [p for p in (path if isinstance(path, list) else [path]) if p]
    data: dict[str, Any] = {}
    for one in paths:
        data = _merge(data, _read_yaml(resolve_preset(one, stage)))
    path = " + ".join(map(str, paths)) if paths else None
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


def _type_name(annotation: Any) -> str:
    name = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"\b(typing|pathlib|configs\.base|[a-z_]+\.config)\.", "", name).replace("NoneType", "None")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model class of a field whose type is a model (or `Model | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def field_rows(model: type[BaseModel], prefix: str = "") -> list[dict]:
    """One row per settable key, from the pydantic model itself (so it cannot go stale): the dotted key, its
    type, its default and its whole description; a nested model is a section row, then its keys."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        if nested is not None:
            rows.append({"section": key, "description": field.description or ""})
            rows.extend(field_rows(nested, key + "."))
            continue
        if field.default_factory is not None:
            default = field.default_factory()
        else:
            default = "(required)" if field.is_required() else field.default
        rows.append({"key": key, "type": _type_name(field.annotation),
                     "default": json.dumps(default, default=str), "description": field.description or ""})
    return rows


def field_lines(model: type[BaseModel]) -> list[str]:
    """`--help`'s list of keys (see field_rows)."""
    lines = []
    for row in field_rows(model):
        if "section" in row:
            lines.append(f"{row['section']}.*" + (f": {row['description']}" if row["description"] else ""))
        else:
            line = f"  {row['key']} ({row['type']}, default {row['default']})"
            lines.append(line + (f": {row['description']}" if row["description"] else ""))
    return lines


def add_config_arguments(parser: argparse.ArgumentParser, *, stage: str, default_config: str,
                         model: type[BaseModel], example: str) -> None:
    """`--config`, `--print-config` and the key=value overrides, with every key listed in `--help`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", action="append", default=None,
                        help=f"YAML file, or a preset name of configs/{stage}/ (default {Path(default_config).stem}); "
                        "repeat to compose several, later ones winning key by key")
    parser.set_defaults(config_default=default_config)
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (preset + overrides, defaults filled in) and exit")
    parser.add_argument("overrides", nargs="*", help=f"dotted key=value, e.g. {example}")
    parser.epilog = ("settable keys (key=value; lists as [a,b]; nested keys dotted; a list of key=value "
                     "overrides merges key by key with the preset's):\n"
                     + "\n".join(field_lines(model)))


def print_config(cfg: BaseModel) -> int:
    """`--print-config`: the resolved config as YAML (a preset you can save), then the usual JSON line."""
    data = cfg.model_dump(mode="json")
    print(yaml.safe_dump(data, sort_keys=False), end="")
    print(json.dumps({"config": data}))
    return 0


def config_cli(argv: list[str] | None, *, prog: str, description: str, default_config: str, model: type[ModelT],
               run: Callable[[ModelT], dict], example: str, failures: tuple[type[Exception], ...],
               log_format: str = "%(asctime)s %(name)s %(levelname)s %(message)s",
               dry_run: Callable[[ModelT], dict] | None = None) -> int:
    """A one-command CLI: `--config preset.yaml key=value ...` -> `run(config)` -> its summary as the last stdout
    line. A bad config exits 2 and a failure in `failures` exits 1, both through `cli_error`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    stage = Path(default_config).parts[1]
    add_config_arguments(parser, stage=stage, default_config=default_config, model=model, example=example)
    if dry_run is not None:
        parser.add_argument("--dry-run", action="store_true",
                            help="check everything the run would check before starting (inputs, model, resources), "
                            "print the result and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=log_format, stream=sys.stderr)
    try:
        cfg = load_config(model, args.config or [args.config_default], args.overrides, stage=stage)
    except ConfigError as exc:
        return cli_error(str(exc), 2, "config error")
    if args.print_config:
        return print_config(cfg)
    try:
        summary = dry_run(cfg) if getattr(args, "dry_run", False) else run(cfg)
    except failures as exc:
        return cli_error(str(exc), 1)
    except Exception as exc:  # a bug, not bad input: the traceback for the report, the JSON line for scripts
        traceback.print_exc()
        return cli_error(f"unexpected {type(exc).__name__}: {exc}", 1)
    print(json.dumps(summary))
    return 0
