"""What the contract's models share: numbers that are never booleans, and the errors a
validator raises (``spec_error``), which ``messages`` turns into ``(field path, message)`` pairs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
)
from pydantic_core import PydanticCustomError


def no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "must be a number, not a boolean")
    return value


Int = Annotated[int, BeforeValidator(no_bool)]
Float = Annotated[float, BeforeValidator(no_bool)]


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def spec_error(message: str, field: str | None = None) -> PydanticCustomError:
    """An error raised by a model validator; ``field`` is appended to the error's location."""
    ctx: dict[str, Any] = {"message": message}
    if field is not None:
        ctx["field"] = field
    return PydanticCustomError("spec_error", "{message}", ctx)
