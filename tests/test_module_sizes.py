"""``docs/architecture.md``'s module sizes are the source's (``bench/module_sizes.py``)."""

from __future__ import annotations

from pathlib import Path

from bench.module_sizes import BEGIN, DOC, END, table, with_table


def test_the_docs_table_is_counted_from_the_source() -> None:
    doc = DOC.read_text()
    assert with_table(doc, table()) == doc, "run: python -m bench.module_sizes --write"


def test_the_table_counts_lines_and_nests_sub_packages(tmp_path: Path) -> None:
    core = tmp_path / "service" / "core"
    (core / "store").mkdir(parents=True)
    (core / "__init__.py").write_text("")
    (core / "settings.py").write_text("a = 1\nb = 2\n")
    (core / "store" / "__init__.py").write_text("x = 1\n")
    (core / "store" / "jobs.py").write_text("1\n2\n3\n")
    rows = table(tmp_path).splitlines()
    assert rows[2] == "| service/core | 6 | store/ 4 (jobs 3, `__init__` 1), settings 2, `__init__` 0 |"
    doc = f"intro\n{BEGIN}\nold table\n{END}\nrest\n"
    assert with_table(doc, "new") == f"intro\n{BEGIN}\nnew\n{END}\nrest\n"
