"""Pipeline configurations from YAML, TOML or JSON files (chosen by extension).

A config may come from someone else, so it is bounded before anything is built from it: YAML
anchors and aliases are refused (a 50 KB file of nested aliases expands to 100 M values), the
text is capped, and so are the values and nesting of what it parses into (:func:`check_size`,
which the command-line options go through too).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lmgc_core.util.errors import ConfigError
from lmgc_core.util.json_keys import unique_keys

MAX_TEXT = 2 << 20
"""A config file's size cap: a real one is a few hundred bytes."""
MAX_VALUES = 100_000
"""Cap on the values (scalars and containers) in a configuration: layouts and expert lists
are short; 100,000 is far beyond any real one and a few MB of Python objects."""
MAX_DEPTH = 32
"""Cap on the nesting of lists and mappings (a mix of mixes with layouts nests ~8 deep)."""


def check_size(data: Any, where: str) -> None:
    """Refuse a configuration (or option value) with more than :data:`MAX_VALUES` values or
    nested deeper than :data:`MAX_DEPTH`, walking it without recursion."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                f"{where} holds over {MAX_VALUES} values; lmgc refuses so large a "
                "configuration (a layout or expert list this long is a mistake)"
            )
        if isinstance(value, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise ConfigError(f"{where} nests lists or mappings deeper than {MAX_DEPTH}")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)
            count += len(value) if isinstance(value, dict) else 0  # the keys


def check_keys(config: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Refuse keys a pipeline configuration does not have, naming the valid ones."""
    unknown = set(config) - set(valid)
    if unknown:
        raise ConfigError(
            f"unknown pipeline keys {sorted(unknown, key=str)}; valid keys: {sorted(valid)}"
        )


_UNIQUE = unique_keys(lambda key: ConfigError(f"key {key!r} is given twice"))
"""Refuses a repeated key: the last value won, so a ``"stages": [quantize]`` written before
``"stages": []`` was dropped without a word."""


def _load_yaml(text: str) -> Any:
    """YAML through libyaml when present (pure-Python PyYAML takes seconds per 100,000 values),
    after one pass over its events that refuses anchors and aliases (with the line of the first
    one) and stops at the value and nesting caps before any object is built."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    count = depth = 0
    open_nodes: list[list[Any]] = []  # per open collection: [a mapping's keys or None, key next]
    resolver = yaml.resolver.Resolver()  # a key is its text and its type (1 and "1" differ)
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            if open_nodes and open_nodes[-1][0] is not None:  # a mapping's key, then its value
                keys, key_next = open_nodes[-1]
                if key_next and isinstance(event, yaml.ScalarEvent):
                    tag = event.tag or resolver.resolve(
                        yaml.ScalarNode, event.value, event.implicit
                    )
                    if (event.value, tag) in keys:
                        raise ConfigError(
                            f"line {event.start_mark.line + 1}: key {event.value!r} is given twice"
                        )
                    keys.add((event.value, tag))
                open_nodes[-1][1] = not key_next
            if isinstance(event, yaml.CollectionStartEvent):
                open_nodes.append([set() if isinstance(event, yaml.MappingStartEvent) else None,
                                   True])  # fmt: skip
        elif isinstance(event, yaml.CollectionEndEvent):
            open_nodes.pop()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise ConfigError(
                f"line {event.start_mark.line + 1}: YAML {kind}{event.anchor} refused; lmgc "
                "configs do not use anchors or aliases (write the values out)"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"nests lists or mappings deeper than {MAX_DEPTH}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            count += 1
            if count > MAX_VALUES:
                raise ConfigError(f"holds over {MAX_VALUES} values")
    return yaml.load(text, Loader=loader)  # a safe loader (no Python objects)


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TEXT + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_TEXT:
        raise ConfigError(f"config {path.name} is larger than {MAX_TEXT} bytes")
    suffix = path.suffix.lower()
    try:
        text = raw.decode("utf-8")
        if suffix in (".yaml", ".yml"):
            data = _load_yaml(text)
        elif suffix == ".toml":
            data = _toml().loads(text)
        elif suffix == ".json":
            data = json.loads(text, object_pairs_hook=_UNIQUE)
        else:
            raise ConfigError(f"config {path.name}: use a .yaml, .toml or .json file")
    except ConfigError as exc:
        if suffix in (".yaml", ".yml", ".toml"):
            sep = ", " if str(exc).startswith("line ") else " "
            raise ConfigError(f"config {path.name}{sep}{exc}") from None
        raise
    except Exception as exc:  # the parsers raise many types; all mean "bad file"
        raise ConfigError(f"config {path.name} is not valid {suffix[1:]}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path.name} must hold a mapping of pipeline keys")
    check_size(data, f"config {path.name}")
    if "pipeline" not in data:
        return data
    beside = sorted(k for k in data if k != "pipeline")
    if beside:  # they were ignored: a `window:` there did nothing (configs have no anchors)
        raise ConfigError(
            f"config {path.name}: {', '.join(map(repr, beside))} beside 'pipeline': put pipeline "
            "keys inside it"
        )
    if not isinstance(data["pipeline"], dict):
        raise ConfigError(f"config {path.name}: 'pipeline' must hold a mapping of pipeline keys")
    return data["pipeline"]


def _toml() -> Any:
    """Python 3.11's ``tomllib``, else ``tomli`` (the same parser; a dependency on 3.10)."""
    try:
        import tomllib
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError(
                "TOML configs need Python 3.11 or the tomli package (pip install tomli)"
            ) from None
    return tomllib
