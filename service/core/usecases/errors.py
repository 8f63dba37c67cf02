"""What a use case answers when it refuses a caller's request. The API turns each into its HTTP
answer (``service.api.errors``); the base knows nothing of HTTP."""

from __future__ import annotations

__all__ = ["Conflict", "Invalid", "NotFound", "Refused", "Unavailable"]


class Refused(Exception):
    """A request refused: a stable ``code``, a message, and the field at fault (if one is)."""

    code = "refused"

    def __init__(self, message: str, field: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field
        if code is not None:
            self.code = code


class NotFound(Refused):
    """No such id for this tenant (another tenant's id looks exactly like a missing one)."""

    code = "not_found"

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"no {what} {ident!r} (for this API key)")


class Conflict(Refused):
    """The resource's state does not allow it (a finished job cannot be cancelled)."""


class Invalid(Refused):
    """The input is invalid: ``errors`` are ``(field, message)`` pairs, the first one at fault."""

    def __init__(self, code: str, errors: list[tuple[str, str]]) -> None:
        message = "; ".join(f"{field}: {text}" if field else text for field, text in errors)
        super().__init__(message, (errors[0][0] or None) if errors else None, code=code)
        self.errors = errors


class Unavailable(Refused):
    """A part the request needs (the broker) is unreachable now; the caller retries later."""
