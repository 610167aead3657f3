"""Typed configs for every stage: YAML presets + dotted `key=value` overrides -> one pydantic model."""

from configs.loader import ConfigError, load_config, parse_overrides

__all__ = ["ConfigError", "load_config", "parse_overrides"]
