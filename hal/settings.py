"""Typed settings tables: a TOML table becomes a dataclass, or a clear error.

Every backend declares its `config.toml` settings as a dataclass; `parse_table`
checks the keys, their types and (through `__post_init__` raising ValueError)
their values, and names the exact key in the error. Kept in `hal` so that
backends depend on nothing above them.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


class SettingsError(ValueError):
    """A bad setting: `key` is the dotted path inside the file, `reason` says why."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        for arg in args:
            try:
                return _coerce(value, arg, key)
            except SettingsError:
                continue
        raise SettingsError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise SettingsError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise SettingsError(key, f"expected {_type_name(tp)}, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SettingsError(key, f"expected a table, got {value!r}")
        return parse_table(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, tp):
        return value
    raise SettingsError(key, f"expected {_type_name(tp)}, got {value!r}")


def parse_table(cls: type, table: dict, where: str) -> Any:
    """Build dataclass `cls` from `table`; `where` is the table's dotted name."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise SettingsError(prefix + unknown[0],
                            f"unknown key (known keys: {', '.join(sorted(fields))})")
    values = {}
    for name, field in fields.items():
        if name in table:
            values[name] = _coerce(table[name], hints[name], prefix + name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SettingsError(prefix + name, "required key is missing")
    try:
        return cls(**values)
    except SettingsError:
        raise
    except ValueError as exc:
        # __post_init__ raises ValueError("key: reason") or ValueError("reason").
        text = str(exc)
        name, sep, reason = text.partition(": ")
        if sep and name in fields:
            raise SettingsError(prefix + name, reason) from None
        raise SettingsError(where or "(top level)", text) from None
