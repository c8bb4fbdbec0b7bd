"""The config reference, generated from the one schema (:mod:`chanctl.config.model`).

Each model's docstring and each field's docstring (pydantic keeps them as descriptions) become the
reference, so it cannot drift from what loads. ``chanctl check --reference`` prints it;
``docs/config-reference.md`` is its committed output, and a test keeps the two equal.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import PydanticUndefined

from chanctl.config.model import Config, JoinRule

__all__ = ["render_reference"]

_HEADER = """\
# Config reference

Generated from `chanctl/config/model.py` by `chanctl check --reference`; do not edit by hand.
Every key below is checked by `chanctl check FILE` (and when `chanctl serve` starts): an unknown
key, a wrong type or a bad rule is an error with file:line:column.
"""


def render_reference() -> str:
    """The reference as Markdown."""
    sections: list[str] = [_HEADER]
    seen: set[type[BaseModel]] = set()
    _render(Config, "", sections, seen)
    return "\n".join(sections)


def _render(model: type[BaseModel], path: str, sections: list[str], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    title = f"`{path}`" if path else "The top level"
    sections.append(f"## {title}\n")
    sections.append(inspect.cleandoc(model.__doc__ or "").replace("``", "`") + "\n")
    nested: list[tuple[type[BaseModel], str]] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        line = f"- **`{key}`** ({_field_type(info)}"
        if info.is_required():
            line += ", required"
        elif info.default is not PydanticUndefined and info.default not in (None, {}, []):
            line += f", default `{_default(info.default)}`"
        line += ")"
        if info.description:
            line += ": " + " ".join(info.description.split()).replace("``", "`")
        sections.append(line)
        for inner, suffix in _models_in(info.annotation):
            nested.append((inner, f"{path}{'.' if path else ''}{key}{suffix}"))
    sections.append("")
    for inner, inner_path in nested:
        _render(inner, inner_path, sections, seen)


def _models_in(annotation: Any) -> list[tuple[type[BaseModel], str]]:
    """Models inside a field's type, with how their keys are reached (``.<name>``, ``[]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and args:
        return [(m, ".<name>" + s) for m, s in _models_in(args[-1])]
    if origin is list and args:
        return [(m, "[]" + s) for m, s in _models_in(args[0])]
    return [found for arg in args for found in _models_in(arg)]


def _field_type(info: Any) -> str:
    for meta in info.metadata:  # Duration and ByteSize parse through a named validator
        func = getattr(getattr(meta, "func", None), "__name__", "")
        if func in ("_duration", "_size", "_window"):
            return {"_duration": "duration", "_size": "size", "_window": "duration, or 0 for off"}[func]
    return _type_name(info.annotation)


def _type_name(annotation: Any) -> str:
    if annotation == JoinRule or annotation == JoinRule | None:
        return "rule: true, false, list of user ids, or CEL"
    if annotation is Any:
        return "any"
    if annotation is None or annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "mapping"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(annotation.__name__, annotation.__name__)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:  # a checked string (an origin) reads as its base type
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(args[-1])}" if args else "mapping"
    return re.sub(r"typing\.", "", str(annotation)).replace("Any", "any")


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, BaseModel):
        return "{}"
    return str(value)
