"""The one parser of `key=value` config overrides, shared by every CLI, sweeps and tests.

A value is read as the type the key already holds, so `data.path=123` stays a string and
`optim.learning_rate=fast` is refused naming the key, rather than guessed.
"""

import ast
import difflib
from collections.abc import Sequence

import ml_collections

from pyoco_jax.errors import ConfigError

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def split_override(item: str) -> tuple[str, str]:
    """`--config.a.b=v`, `config.a.b=v` or `a.b=v` -> ("a.b", "v")."""
    key, sep, text = item.removeprefix("--").removeprefix("config.").partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not key=value (e.g. --config.train.num_steps=100)")
    return key, text


def apply_overrides_in_place(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Sets each override on `config` in order (so the last of a key wins)."""
    for item in overrides:
        key, text = split_override(item)
        *sections, leaf = key.split(".")
        target = config
        for depth, name in enumerate(sections):
            if name not in target or not isinstance(target[name], ml_collections.ConfigDict):
                raise ConfigError(_unknown(".".join(sections[: depth + 1]), target, name, "section"))
            target = target[name]
        if leaf not in target:
            raise ConfigError(_unknown(key, target, leaf, "key"))
        value = parse_value(key, text, target[leaf])
        if isinstance(target[leaf], ml_collections.ConfigDict):
            raise ConfigError(f"config key {key!r} is a section: set one of its keys {sorted(target[leaf].keys())}")
        with target.ignore_type():  # Types were checked by parse_value (e.g. per-level tuples for an int).
            target[leaf] = value


def parse_value(key: str, text: str, current):
    """`text` read as the kind of value `current` is; a ConfigError names the key otherwise."""
    if isinstance(current, bool):
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise ConfigError(f"config key {key!r} must be true or false, got {text!r}")
    if isinstance(current, str):
        return text
    if isinstance(current, int | float):
        value = _literal(text)
        if isinstance(value, tuple | list) and isinstance(current, int):
            return tuple(value)  # Per-level values (e.g. heads) may replace a scalar; validation checks them.
        if isinstance(current, float) and isinstance(value, str) and _is_float(value):
            return float(value)  # nan / inf parse here and are refused by validation, naming the key.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(current, int) and isinstance(value, float))
        ):
            kind = "an integer" if isinstance(current, int) else "a number"
            raise ConfigError(f"config key {key!r} must be {kind} like the default {current!r}, got {text!r}")
        return float(value) if isinstance(current, float) else value
    if isinstance(current, tuple | list):
        value = _literal(text)
        return tuple(value) if isinstance(value, tuple | list) else (value,)
    return _literal(text)  # None: whatever the text spells.


def _literal(text: str):
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _unknown(key: str, section: ml_collections.ConfigDict, name: str, kind: str) -> str:
    close = difflib.get_close_matches(name, list(section.keys()), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known here: {sorted(section.keys())}"
    return f"unknown config {kind} {key!r}{hint} (every option is documented in configs/default.py)"
