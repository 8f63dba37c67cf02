"""Validation errors as messages a user can act on: :class:`SpecError` and
:func:`format_validation_error`.

:class:`SpecError` carries *every* problem found in a job spec, each as a ``(field path,
message)`` pair, e.g. ``childtuning.reserve_p: must be > 0 and <= 1 (got 1.5)``.
:func:`format_validation_error` builds one from pydantic's ``ValidationError``, following each
error's location through the models from :class:`~service.core.contract.models.JobSpec` to name
the allowed values, the bounds, or the closest allowed key.
"""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic.fields import FieldInfo

from service.core.contract.models import JobSpec
from service.core.contract.vocabulary import SEED_MAX


class SpecError(ValueError):
    """A job spec that cannot be accepted; ``errors`` lists every problem as (field path, message).

    The field path is dotted (``childtuning.reserve_p``); ``""`` means the spec as a whole.
    """

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors: list[tuple[str, str]] = list(errors) or [("", "invalid job spec")]
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [f"{path}: {message}" if path else message for path, message in self.errors]
        if len(lines) == 1:
            return lines[0]
        return f"{len(lines)} problems in the job spec:\n" + "\n".join("  " + line for line in lines)

    def __reduce__(self) -> tuple[type[SpecError], tuple[list[tuple[str, str]]]]:
        return (type(self), (self.errors,))

    @property
    def fields(self) -> list[str]:
        """The field paths, in order (for the API's ``error.field``)."""
        return [path for path, _ in self.errors]

    @property
    def field(self) -> str:
        """The first problem's field path (``""`` for the spec as a whole)."""
        return self.errors[0][0]


def _show(value: Any) -> str:
    """A short rendering of a user's input for an error message."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, Mapping):
        text = "an object"
    elif isinstance(value, list | tuple):
        text = "a list"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unwrap(annotation: Any) -> list[Any]:
    """The member types of an annotation (``X | None`` -> [X], ``Annotated[X, ...]`` -> [X])."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arg in get_args(annotation):
            if arg is not type(None):
                out.extend(_unwrap(arg))
        return out
    return [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``X | None`` included), if any."""
    return next((t for t in _unwrap(annotation) if isinstance(t, type) and issubclass(t, BaseModel)), None)


def _lookup(model: type[BaseModel], key: str) -> FieldInfo | None:
    """A model's field by name or by one of its validation aliases."""
    for name, info in model.model_fields.items():
        aliases = {name}
        va = info.validation_alias
        if isinstance(va, AliasChoices):
            aliases.update(c for c in va.choices if isinstance(c, str))
        elif isinstance(va, str):
            aliases.add(va)
        if key in aliases:
            return info
    return None


def _resolve(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Follow an error location through the models from :class:`JobSpec`.

    Returns the model that holds the location's last key and that key's field (``None`` where
    the path leaves the models, e.g. inside ``metadata``). An empty location is the job itself.
    """
    model: type[BaseModel] | None = JobSpec
    info: FieldInfo | None = None
    for index, part in enumerate(loc):
        if model is None or not isinstance(part, str):
            return None, None
        info = _lookup(model, part)
        if info is None:
            return model, None
        if index == len(loc) - 1:
            return model, info
        model = _model_in(info.annotation)
    return model, info


def _bounds_text(info: FieldInfo | None) -> str | None:
    """``> 0 and <= 1`` from a field's numeric constraints."""
    if info is None:
        return None
    parts: list[str] = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Ge):
            parts.append(f">= {item.ge}")
    for item in info.metadata:
        if isinstance(item, annotated_types.Lt):
            parts.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.Le):
            parts.append("<= 2**63 - 1" if item.le == SEED_MAX else f"<= {item.le}")
    return " and ".join(parts) or None


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    keys: list[str] = []
    for name, info in model.model_fields.items():
        keys.append(name)
        va = info.validation_alias
        if isinstance(va, AliasChoices):
            keys.extend(c for c in va.choices if isinstance(c, str) and c != name)
    return keys


_BOUND_KINDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
    "dict": "an object",
    "model": "an object",
}


def _message(err: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind: str = err["type"]
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    given = err.get("input")
    got = f" (got {_show(given)})"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        holder, _ = _resolve(loc)
        if holder is None:
            return "unknown field"
        allowed = _allowed_keys(holder)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return "unknown field; allowed: " + ", ".join(allowed) + hint
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        _, info = _resolve(loc)
        choices: list[str] = []
        if info is not None:
            for t in _unwrap(info.annotation):
                if get_origin(t) is Literal:
                    choices.extend(str(a) for a in get_args(t))
        allowed_text = ", ".join(choices) if choices else str(expected)
        return f"must be one of {allowed_text}{got}"
    if kind in _BOUND_KINDS:
        _, info = _resolve(loc)
        bounds = _bounds_text(info)
        if bounds is None:
            op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
            key = {
                "greater_than": "gt",
                "greater_than_equal": "ge",
                "less_than": "lt",
                "less_than_equal": "le",
            }
            bounds = f"{op[kind]} {ctx.get(key[kind])}"
        return f"must be {bounds}{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind in ("string_too_short", "string_too_long"):
        low, high = ctx.get("min_length"), ctx.get("max_length")
        if kind == "string_too_short":
            return "must not be empty" if low == 1 else f"must have at least {low} characters"
        return f"must have at most {high} characters (got {len(given) if isinstance(given, str) else '?'})"
    if kind == "int_from_float":
        return f"must be a whole number{got}"
    for prefix, word in _TYPE_WORDS.items():
        if kind.startswith(prefix + "_") and (kind.endswith("_type") or kind.endswith("_parsing")):
            return f"must be {word}{got}"
    if kind == "number_not_bool":
        return f"must be a number, not a boolean{got}"
    if kind == "spec_error":
        return str(ctx.get("message", err.get("msg", "")))
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg + got


def format_validation_error(exc: ValidationError) -> SpecError:
    """Turn pydantic's ValidationError into a :class:`SpecError` listing every problem."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        message = _message(err, loc)
        ctx = err.get("ctx") or {}
        path_parts = [str(p) for p in loc]
        if err["type"] == "spec_error" and ctx.get("field"):
            path_parts.extend(str(ctx["field"]).split("."))
            # A model-level check on JobSpec names a nested field by its full path already.
        out.append((".".join(path_parts), message))
    return SpecError(out)
