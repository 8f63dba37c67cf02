"""Whether a caller's text can be stored and shown: JSON's ``\\ud800`` escapes decode to lone
surrogates, which no answer, log or ``job.json`` could encode."""

from __future__ import annotations

from typing import Any

__all__ = ["NOT_UNICODE", "is_unicode", "not_unicode"]


def is_unicode(text: str) -> bool:
    """Whether ``text`` can go into an answer (UTF-8 cannot encode a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def not_unicode(body: Any) -> str | None:
    """Where a JSON body holds a string that is not Unicode text, else None.

    The answer is the dotted path of the value, or of the object whose key it is (the key itself
    cannot be shown); ``""`` for the body itself. Iterative: a body may nest as deep as the JSON
    decoder allows.
    """
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not is_unicode(value):
                return path
        elif isinstance(value, dict):
            if not all(is_unicode(str(key)) for key in value):
                return path
            items = [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
            stack.extend(reversed(items))  # in document order
        elif isinstance(value, list):
            items = [(f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value)]
            stack.extend(reversed(items))
    return None


NOT_UNICODE = "not valid Unicode text (a lone surrogate such as \\ud800)"
