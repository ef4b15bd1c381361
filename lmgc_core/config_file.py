"""Pipeline configurations from YAML, TOML or JSON files (chosen by extension)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config {path.name}: use a .yaml, .toml or .json file")
    except ConfigError:
        raise
    except Exception as exc:  # the parsers raise many types; all mean "bad file"
        raise ConfigError(f"config {path.name} is not valid {suffix[1:]}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path.name} must hold a mapping of pipeline keys")
    return data.get("pipeline", data)
