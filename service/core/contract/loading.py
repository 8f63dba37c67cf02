"""Loading a job spec: :func:`load_spec` reads a file, a JSON or YAML text, or a mapping, and
validates it into a :class:`~service.core.contract.models.JobSpec`, raising
:class:`~service.core.contract.messages.SpecError` listing every problem.

The workers read a job's ``job.json`` through it; the API and the CLI read submitted specs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from service.core.contract.messages import SpecError, format_validation_error
from service.core.contract.models import JobSpec


def _parse_text(text: str, fmt: str | None) -> Any:
    """Parse a spec's text as JSON or YAML (``fmt`` None: JSON when it starts with ``{``, else YAML)."""
    looks_json = text.lstrip().startswith(("{", "["))
    if fmt == "json" or (fmt is None and looks_json):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            json_error = SpecError([("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")])
            if fmt == "json":
                raise json_error from exc
        # Not JSON after all: flow-style YAML also starts with "{".
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise json_error from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([("", f"invalid YAML{where}: {problem}")]) from exc


def load_spec(source: str | Path | Mapping[str, Any], *, strict: bool = False) -> JobSpec:
    """Read and validate a job spec from a file path, a JSON or YAML text, or a mapping.

    A :class:`~pathlib.Path`, or a one-line string naming an existing file, is read as a file:
    JSON for ``.json``, YAML for ``.yaml``/``.yml``, else by content. Any other string is the
    spec's text (JSON when it starts with ``{``, else YAML). Raises :class:`SpecError` listing
    every problem.

    ``strict`` takes every value as the JSON type its schema says (no ``"3"`` for 3, no ``0``
    for false): the REST API's mode, so it accepts exactly what its OpenAPI schema describes.
    Files stay lax: YAML reads ``2e-5`` as a string.
    """
    fmt: str | None = None
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        path: Path | None = None
        if isinstance(source, Path):
            path = source
        elif "\n" not in source and len(source) < 4096 and source.strip():
            candidate = Path(source.strip()).expanduser()
            try:
                if candidate.is_file():
                    path = candidate
            except OSError:
                path = None
        if path is not None:
            try:
                text = path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise SpecError([("", f"cannot read {path}: {exc}")]) from exc
            suffix = path.suffix.lower()
            fmt = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else None
        else:
            text = str(source)
        if not text.strip():
            raise SpecError([("", "the job spec is empty")])
        data = _parse_text(text, fmt)
    if not isinstance(data, Mapping):
        raise SpecError([("", f"the job spec must be an object (a mapping), not {type(data).__name__}")])
    try:
        return JobSpec.model_validate(data, strict=strict, context={"strict": strict})
    except ValidationError as exc:
        raise format_validation_error(exc) from exc
