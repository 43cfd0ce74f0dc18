"""Configuration: defaults (runtime/defaults.yaml) < a conf/ file < --set overrides.

The defaults file is the schema: unknown keys and wrongly typed values are rejected with a
message naming the dotted key, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


# Sections whose keys are the user's own (free-form mappings of strings).
_FREE_FORM = {"spark.conf"}


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (YAML would keep the last)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"key '{key}' appears twice (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _yaml(text: str):
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def _load_defaults() -> dict:
    return _yaml(resources.files("runtime").joinpath("defaults.yaml").read_text())


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_value(key: str, default: Any, value: Any) -> Any:
    if default is None:
        if value is None or isinstance(value, (str, int, float)):
            return value
        raise ConfigError(f"config key '{key}' must be a string or null, got {_type_name(value)} {value!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, list):
        if isinstance(value, list):
            return value
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    raise ConfigError(
        f"config key '{key}' must be {_type_name(default)} (like the default {default!r}), "
        f"got {_type_name(value)} {value!r}"
    )


def _merge(defaults: dict, overrides: Mapping, prefix: str = "") -> dict:
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "(none)"
            raise ConfigError(f"unknown config key '{dotted}' (known keys here: {known})")
        default = defaults[key]
        if dotted in _FREE_FORM:
            merged[key] = dict(_check_value(dotted, default, value))
        elif isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{dotted}' must be a mapping, got {_type_name(value)} {value!r}")
            merged[key] = _merge(default, value, dotted + ".")
        else:
            merged[key] = _check_value(dotted, default, value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``dotted.key=value``; the value is read as YAML (so 5 is an int, [1,2] a list)."""
    if "=" not in text:
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _nest(parts: list[str], value: Any) -> dict:
    out: Any = value
    for part in reversed(parts):
        out = {part: out}
    return out


class Config(dict):
    """A validated configuration: a nested dict with dotted lookup through ``get_path``."""

    def get_path(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"unknown config key '{dotted}'")
            node = node[part]
        return node

    def path(self, name: str, dataset: str | None = None) -> str:
        """A storage location from ``paths.<name>`` with {lake} and {dataset} filled in."""
        template = self.get_path(f"paths.{name}")
        return template.format(lake=self["storage"]["lake"].rstrip("/"), dataset=dataset or self["dataset"])


def load_config(conf_file: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then ``conf_file`` (YAML), then each ``dotted.key=value`` override, validated."""
    merged = _load_defaults()
    if conf_file is not None:
        path = Path(conf_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = _yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        except ConfigError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        try:
            merged = _merge(merged, data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for text in overrides:
        parts, value = parse_override(text)
        merged = _merge(merged, _nest(parts, value))
    if merged["dataset"] not in ("telemetry", "transactions"):
        raise ConfigError(f"config key 'dataset' must be telemetry or transactions, got {merged['dataset']!r}")
    if merged["storage"]["format"] not in ("parquet", "delta"):
        raise ConfigError(f"config key 'storage.format' must be parquet or delta, got {merged['storage']['format']!r}")
    return Config(merged)
