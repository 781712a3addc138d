"""What a pydantic model (a plugin's ``Params``, a recipe, the suite) accepts, read from the model itself.

Used for error messages (the fields allowed where an unknown one was given, the
closest name to an unknown plugin: :func:`format_validation_error`, :func:`unknown_name`)
and for ``kdbench describe`` (each param's type, allowed values, default and
description), so neither can drift from the code.
"""

from __future__ import annotations

import datetime
import difflib
import enum
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kdbench.errors import UserError
from kdbench.suite.file import excerpt

BOUNDS = {">": annotated_types.Gt, ">=": annotated_types.Ge, "<": annotated_types.Lt, "<=": annotated_types.Le}


def members(tp: Any) -> list:
    """The alternatives of a Union/Optional (None left out); the type itself otherwise."""
    if typing.get_origin(tp) is typing.Annotated:
        return members(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(tp) if arg is not type(None) for m in members(arg)]
    return [tp]


def model_at(model: Optional[type[BaseModel]], loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model that validates the value at ``loc`` (a ValidationError location) of
    ``model``, following fields, list items and Optionals; None where that is not one model."""
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue  # a list item: the list's element type was taken with its field
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        candidates = []
        for member in members(field.annotation):
            if typing.get_origin(member) in (list, tuple, set):
                member = (typing.get_args(member) or (None,))[0]
            if isinstance(member, type) and issubclass(member, BaseModel):
                candidates.append(member)
        model = candidates[0] if len(candidates) == 1 else None
    return model


def allowed_fields(model: Optional[type[BaseModel]], name: str) -> str:
    """What to add to "unknown field" for ``name`` in ``model``: the closest field and all of them
    (nothing when the model is not known)."""
    if model is None:
        return ""
    allowed = list(model.model_fields)
    hint = difflib.get_close_matches(name, allowed, n=1)
    return (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; allowed: {', '.join(allowed) or 'none'}"


def type_text(tp: Any) -> str:
    """A short, readable name of a field type: ``int``, ``float | None``, ``list[int]``, ``str``
    for a Literal (its values are listed as the allowed ones)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is typing.Literal:
        return " | ".join(dict.fromkeys(type(a).__name__ for a in args))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_text(a) for a in args))
    if tp is type(None):
        return "None"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_text(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def choices(tp: Any) -> list:
    """The values of every Literal in a field type (empty when it has none)."""
    return [value for member in members(tp) if typing.get_origin(member) is typing.Literal
            for value in typing.get_args(member)]


def bounds(field: FieldInfo) -> dict[str, Any]:
    """Numeric and length constraints of a field: ``{">=": 1, "<": 1}``, ``{"min length": 1}``."""
    found = {}
    for item in field.metadata:
        for symbol, kind in BOUNDS.items():
            if isinstance(item, kind):
                found[symbol] = getattr(item, kind.__name__.lower())  # Ge(ge=1).ge
        if isinstance(item, annotated_types.MinLen):
            found["min length"] = item.min_length
        if isinstance(item, annotated_types.MaxLen):
            found["max length"] = item.max_length
    return found


@dataclass
class ParamInfo:
    """One field of a params model as ``kdbench describe`` shows it."""

    name: str
    type: str
    choices: list
    bounds: dict
    required: bool
    default: Any
    description: str

    @property
    def allowed(self) -> str:
        """Choices and bounds in words: ``'first', 'random'`` or ``>= 1, < 10``."""
        parts = [", ".join(json.dumps(c) for c in self.choices)] if self.choices else []
        parts += [f"{k} {v}" for k, v in self.bounds.items()]
        return "; ".join(parts)

    @property
    def default_text(self) -> str:
        return "(required)" if self.required else json.dumps(self.default, default=str)


def params_of(model: type[BaseModel]) -> list[ParamInfo]:
    """Every field of ``model``: name, type, choices, bounds, default, description."""
    rows = []
    for name, field in model.model_fields.items():
        required = field.is_required()
        default = None
        if not required:
            default = field.get_default(call_default_factory=True)
            default = default if default is not PydanticUndefined else None
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            elif isinstance(default, tuple):
                default = list(default)
        rows.append(ParamInfo(name, type_text(field.annotation), choices(field.annotation), bounds(field),
                              required, default, field.description or ""))
    return rows


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# what pydantic's JSON mode (validate_strictly) calls an array or an object, in a YAML file's words
YAML_WORDS = {"list_type": "Input should be a valid list", "tuple_type": "Input should be a valid list",
              "dict_type": "Input should be a valid dictionary"}


def format_validation_error(path: Path, err: ValidationError, prefix: str = "", model=None) -> str:
    """One line per error: the file, the field's location (after ``prefix``) and what is wrong. With
    the validated ``model``, an unknown field's line names the allowed ones and the closest."""
    lines = []
    for e in err.errors():
        where = _loc(tuple(e["loc"]))
        where = f"{prefix}.{where}" if prefix and where else (prefix or where or "(top level)")
        msg = YAML_WORDS.get(e["type"], e["msg"])
        if e["type"] == "extra_forbidden":
            msg = "unknown field" + allowed_fields(model_at(model, tuple(e["loc"])[:-1]), str(e["loc"][-1]))
        msg = msg if len(msg) <= 500 else msg[:500] + "..."  # a library's message may hold pages of frames
        if "input" in e and e["type"] not in ("missing", "extra_forbidden") and not isinstance(e["input"], dict):
            msg += f" (got {excerpt(e['input'])})"
        lines.append(f"{path}: {where}: {msg}")
    return "\n".join(lines)


def _json_value(obj: Any) -> Any:
    """What ``json.dumps`` cannot write itself, as JSON data (a model, a path, an enum, a date)."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, (Path, enum.Enum, datetime.date, set, frozenset)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else getattr(obj, "value", str(obj))
    raise TypeError(f"{type(obj).__name__} is not JSON data")


def validate_strictly(model: type[BaseModel], data: Any) -> BaseModel:
    """``data`` (what a suite file says) validated by ``model`` as the JSON data YAML is: strictly, so
    a string is not a number ("1"), a bool is not an int (``true``), a string is not a bool ("no"),
    while an int is still a float and a list still a tuple. Raises pydantic's ValidationError."""
    try:
        text = json.dumps(data, default=_json_value)
    except (TypeError, ValueError):  # not JSON data (a Python caller's objects): pydantic's usual rules
        return model.model_validate(data)
    return model.model_validate_json(text, strict=True)


def unknown_name(path: Path, where: str, kind: str, name: str, allowed: list[str],
                 failures: Sequence[str] = ()) -> UserError:
    """The error for an unknown plugin name: where, the name, the closest allowed one, all allowed,
    and the plugins that failed to load (``Registry.failure_lines()``): the name may be theirs."""
    hint = difflib.get_close_matches(str(name)[:200], allowed, n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    failed = "".join(f"; {line}" for line in failures)
    return UserError(f"{path}: {where}: unknown {kind} {excerpt(name)}{suggestion}; "
                     f"allowed: {', '.join(sorted(allowed))}{failed}")
