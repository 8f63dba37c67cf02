"""The dashboard keeps no copy of the job contract's enumerations: it reads them at start from
the API's OpenAPI document (``service/api/ui/lib/contract.js``), and takes ``higher_is_better``
from the API's answers. Static checks of the modules' source, and the served document checked
for every enumeration the dashboard reads (tests/e2e/test_dashboard.py checks the browser)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from service.core.contract.vocabulary import (
    DEVICES,
    FINAL_STATUSES,
    MODES,
    PRECISIONS,
    PRESETS,
    STATUSES,
    TASK_TYPES,
)
from tests.e2e.stack import Api

UI = Path(__file__).resolve().parents[2] / "service" / "api" / "ui"
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "modes": MODES,
    "presets": PRESETS,
    "task types": TASK_TYPES,
    "statuses": STATUSES,
    "final statuses": FINAL_STATUSES,
    "devices": DEVICES,
    "precisions": PRECISIONS,
}
STRING = re.compile(r"""'((?:[^'\\\n]|\\.)*)'|"((?:[^"\\\n]|\\.)*)"|`((?:[^`\\]|\\.)*)`""")
# An array literal without nested brackets: where a hand-copied list of values would be.
ARRAY = re.compile(r"\[([^\[\]]*)\]")


def modules() -> list[Path]:
    found = sorted(p for p in UI.rglob("*.js") if "vendor" not in p.relative_to(UI).parts)
    assert len(found) >= 10, found  # the dashboard as modules (app.js, lib/, views/)
    return found


def strip_comments(source: str) -> str:
    source = re.sub(r"/\*.*?\*/", " ", source, flags=re.S)
    return re.sub(r"(?m)^\s*//.*$|(?<=[;,{}()\s])//[^\n'\"`]*$", " ", source)


def hard_coded_lists(source: str) -> list[tuple[str, list[str]]]:
    """(vocabulary, values) for each array literal holding two or more values of one of the
    contract's enumerations: a copy of (part of) that list."""
    found = []
    for array in ARRAY.finditer(strip_comments(source)):
        literals = [next(g for g in m.groups() if g is not None) for m in STRING.finditer(array.group(1))]
        for name, vocabulary in VOCABULARIES.items():
            copied = [value for value in literals if value in vocabulary]
            if len(set(copied)) >= 2:
                found.append((name, copied))
    return found


def test_the_check_finds_a_hand_copied_list() -> None:
    # The lines the dashboard had before it read the OpenAPI document, and variations.
    assert hard_coded_lists("const FINAL = new Set(['succeeded', 'failed', 'cancelled']);")
    assert hard_coded_lists("const MODES = ['vanilla', 'childtuning-d', 'childtuning-f', 'update-dropout'];")
    assert hard_coded_lists('const P = [\n  "glue/rte",\n  "glue/mrpc",\n];')
    assert hard_coded_lists("selectInput('f-device', 'resources.device', ['auto', 'cpu', 'cuda'], 'auto')")
    assert not hard_coded_lists("if (job.status === 'running') return ['x', 'running'];")
    assert not hard_coded_lists("// ['queued', 'running'] in a comment\nconst a = [1, 2];")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(UI)))
def test_no_module_copies_an_enumeration_of_the_contract(path: Path) -> None:
    assert hard_coded_lists(path.read_text()) == [], path


def test_no_module_copies_the_higher_is_better_rule() -> None:
    """Whether a metric is better lower comes from the API (a job's and an experiment's
    higher_is_better), not from a copy of service.core.contract.vocabulary.higher_is_better."""
    for path in modules():
        source = strip_comments(path.read_text())
        for token in ("'perplexity'", "'rmse'", "'mse'", "'mae'", "lowerIsBetter", "endsWith('loss')"):
            assert token not in source, (path, token)
    job_page = (UI / "views" / "job-records.js").read_text() + (UI / "views" / "job.js").read_text()
    assert "higher_is_better" in job_page


def test_modules_stay_small_and_load_as_modules() -> None:
    for path in modules():
        assert len(path.read_text().splitlines()) <= 400, path
    page = (UI / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", page) == [
        '<script src="vendor/uplot/uPlot.iife.min.js">',
        '<script type="module" src="app.js">',
    ]


def read_by_the_dashboard() -> list[tuple[str, str]]:
    """(component schema, property) of every enumeration contract.js reads with values()."""
    source = (UI / "lib" / "contract.js").read_text()
    pairs = re.findall(r"values\(doc, '(\w+)', '(\w+)'\)", source)
    assert len(pairs) >= 5, pairs
    return pairs


def enum_of(schema: dict[str, Any]) -> list[Any] | None:
    if "enum" in schema:
        return list(schema["enum"])
    for option in schema.get("anyOf", []):
        values = enum_of(option)
        if values is not None:
            return values
    return None


def test_the_openapi_document_holds_every_enumeration_the_dashboard_reads(api: Api) -> None:
    doc = api.client(None).get("/openapi.json").json()  # public: the dashboard reads it before sign-in
    components = doc["components"]["schemas"]
    expected = {
        ("ChildTuningSpec", "mode"): MODES,
        ("DatasetSpec", "preset"): PRESETS,
        ("DatasetSpec", "task_type"): TASK_TYPES,
        ("Resources", "device"): DEVICES,
        ("Resources", "precision"): PRECISIONS,
    }
    read = read_by_the_dashboard()
    assert set(read) == set(expected), read
    for model, name in read:
        assert enum_of(components[model]["properties"][name]) == list(expected[model, name]), (model, name)
    assert components["ChildTuningSpec"]["properties"]["mode"]["default"] in MODES
    status = next(p for p in doc["paths"]["/v1/jobs"]["get"]["parameters"] if p["name"] == "status")
    assert enum_of(status["schema"]) == list(STATUSES)
    assert enum_of(components["FinalStatus"]) == list(FINAL_STATUSES)
    zero = components["Resources"]["properties"]["zero_stage"]
    assert (zero["minimum"], zero["maximum"]) == (0, 3) and zero["default"] == 2
    # What the job page says about its metric comes from the API, as for an experiment.
    assert components["JobPublic"]["properties"]["higher_is_better"]
    assert components["ExperimentPublic"]["properties"]["higher_is_better"]
