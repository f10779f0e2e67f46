"""A config as text: `--set a.b=value` overrides in, the resolved JSON out.

`apply_overrides` changes a few fields of any config dataclass from `--set a.b=value` strings, with
the value converted to the field's declared type and an error naming the path when a field does not
exist. `to_jsonable` renders the resolved config that is written next to every output and inside
every checkpoint.
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any


def apply_overrides(config: Any, assignments: Sequence[str]) -> Any:
    """A copy of `config` with each `a.b.c=value` applied (dataclass fields, mapping keys).

    The value is parsed as a Python literal when it is one (`3`, `0.1`, `(0.9, 0.95)`, `None`,
    `True`) and converted to the field's declared type; anything else is a string.
    """
    for assignment in assignments:
        path, sep, text = assignment.partition("=")
        if not sep or not path:
            raise ValueError(f"--set expects a.b=value, got {assignment!r}")
        config = _set_path(config, path.strip().split("."), text.strip(), path.strip())
    return config


def _set_path(node: Any, keys: list[str], text: str, full: str) -> Any:
    key, rest = keys[0], keys[1:]
    if dataclasses.is_dataclass(node):
        names = [f.name for f in dataclasses.fields(node)]
        if key not in names:
            raise ValueError(f"--set {full}: {type(node).__name__} has no field {key!r}; fields: {', '.join(names)}")
        current = getattr(node, key)
        if rest:
            new = _set_path(current, rest, text, full)
        else:
            new = _convert(text, typing.get_type_hints(type(node))[key], current, full)
        return dataclasses.replace(node, **{key: new})
    if isinstance(node, Mapping):
        if key not in node:
            raise ValueError(f"--set {full}: no entry {key!r}; entries: {', '.join(map(str, node))}")
        if not rest:
            raise ValueError(f"--set {full}: set a field of entry {key!r}, not the entry itself")
        return {**node, key: _set_path(node[key], rest, text, full)}
    raise ValueError(f"--set {full}: {key!r} is inside a {type(node).__name__}, which has no fields")


def _convert(text: str, annotation: Any, current: Any, full: str) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    allowed = _allowed_types(annotation)
    if value is None:
        if type(None) in allowed or annotation is Any:
            return None
        raise ValueError(f"--set {full}: field cannot be None")
    if annotation is Any:
        return value
    for kind in allowed:
        if kind is bool:
            if isinstance(value, bool):
                return value
        elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        elif kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        elif kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(text)
        elif kind is tuple and isinstance(value, (tuple, list)):
            return tuple(value)
    names = ", ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ValueError(f"--set {full}: cannot use {text!r} as {names} (current value {current!r})")


def _allowed_types(annotation: Any) -> tuple:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed_types(arg))
    if origin is not None:
        return (origin,)
    return (annotation,)


def to_jsonable(value: Any) -> Any:
    """The resolved config as JSON-able data; dataclasses carry their class path under `_type`."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"_type": f"{type(value).__module__}.{type(value).__qualname__}"}
        out.update({f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return out
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if type(value).__module__.startswith("atomforge.") and hasattr(value, "__dict__"):
        # Objectives and schedules: their class and public settings, so the run record says how it trained.
        out = {"_type": f"{type(value).__module__}.{type(value).__qualname__}"}
        out.update({k: to_jsonable(v) for k, v in vars(value).items() if not k.startswith("_")})
        return out
    return repr(value)
