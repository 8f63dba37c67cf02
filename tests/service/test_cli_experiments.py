"""The experiment CLI's tables, from summaries shaped like the API's (no server)."""

from __future__ import annotations

import copy
import csv
import io
from typing import Any

from service.cli.experiments import print_compare, print_experiment_status
from service.cli.tables import (
    COMPARE_CSV_HEADER,
    COMPARE_HEADER,
    bar_postfix,
    compare_csv,
    compare_header,
    compare_rows,
    counts_text,
    format_table,
    job_changes,
    job_rows,
    list_rows,
    running_text,
)

MODE, SEED = "childtuning.mode", "hyperparameters.seed"


def _job(n: int, mode: str, seed: int, status: str, score: float | None, **extra: Any) -> dict[str, Any]:
    job = {
        "id": f"job-{n:016x}",
        "values": {MODE: mode, SEED: seed},
        "status": status,
        "phase": None,
        "step": 40 if status == "succeeded" else 0,
        "total_steps": 40 if status != "queued" else None,
        "score": score,
        "error": None,
    }
    job.update(extra)
    return job


SUMMARY: dict[str, Any] = {
    "id": "exp-0123456789abcdef",
    "name": "rte modes",
    "status": "succeeded",
    "created_at": 1_700_000_000.0,
    "finished_at": 1_700_000_900.0,
    "metric": "accuracy",
    "score": "final",
    "higher_is_better": True,
    "max_parallel": 2,
    "axes": {MODE: ["vanilla", "childtuning-d", "childtuning-f"], SEED: [42, 52, 57]},
    "seed_axis": SEED,
    "baseline": {MODE: "vanilla"},
    "cancel_requested": False,
    "counts": {"waiting": 0, "queued": 0, "running": 0, "succeeded": 8, "failed": 1, "cancelled": 0},
    "jobs": [
        _job(1, "vanilla", 42, "succeeded", 0.61),
        _job(2, "vanilla", 52, "succeeded", 0.63),
        _job(3, "vanilla", 57, "succeeded", 0.62),
        _job(4, "childtuning-d", 42, "succeeded", 0.66),
        _job(5, "childtuning-d", 52, "succeeded", 0.67),
        _job(6, "childtuning-d", 57, "succeeded", 0.665),
        _job(7, "childtuning-f", 42, "succeeded", 0.60),
        _job(8, "childtuning-f", 52, "succeeded", 0.64),
        _job(9, "childtuning-f", 57, "failed", None, error="CUDA out of memory\nTraceback ..."),
    ],
    "cells": [
        {
            "label": "childtuning.mode='vanilla'",
            "values": {MODE: "vanilla"},
            "jobs": ["job-1", "job-2", "job-3"],
            "n": 3,
            "mean": 0.62,
            "std": 0.01,
            "min": 0.61,
            "max": 0.63,
            "scores": {"42": 0.61, "52": 0.63, "57": 0.62},
            "baseline": True,
            "vs_baseline": None,
        },
        {
            "label": "childtuning.mode='childtuning-d'",
            "values": {MODE: "childtuning-d"},
            "jobs": ["job-4", "job-5", "job-6"],
            "n": 3,
            "mean": 0.665,
            "std": 0.005,
            "min": 0.66,
            "max": 0.67,
            "scores": {"42": 0.66, "52": 0.67, "57": 0.665},
            "baseline": False,
            "vs_baseline": {"n": 3, "mean_diff": 0.045, "ci95": [0.02, 0.07], "verdict": "better"},
        },
        {
            "label": "childtuning.mode='childtuning-f'",
            "values": {MODE: "childtuning-f"},
            "jobs": ["job-7", "job-8", "job-9"],
            "n": 2,
            "mean": 0.62,
            "std": 0.0282842712474619,
            "min": 0.6,
            "max": 0.64,
            "scores": {"42": 0.6, "52": 0.64},
            "baseline": False,
            "vs_baseline": {"n": 2, "mean_diff": -0.015, "ci95": [-0.3, 0.27], "verdict": "within noise"},
        },
    ],
    "best_cell": "childtuning.mode='childtuning-d'",
}


def _row(rows: list[list[str]], label: str) -> dict[str, str]:
    (row,) = [r for r in rows if r[1] == label]
    return dict(zip(COMPARE_HEADER, row, strict=True))


def test_compare_rows_one_per_cell_with_scores_to_four_decimals() -> None:
    rows = compare_rows(SUMMARY)
    assert [r[1] for r in rows] == [c["label"] for c in SUMMARY["cells"]]
    assert all(len(r) == len(COMPARE_HEADER) for r in rows)
    d = _row(rows, "childtuning.mode='childtuning-d'")
    assert d["N"] == "3"
    assert d["MEAN ± STD"] == "0.6650 ± 0.0050"
    assert (d["MIN"], d["MAX"]) == ("0.6600", "0.6700")
    assert d["Δ VS BASELINE"] == "+0.0450"
    assert d["CI95"] == "[+0.0200, +0.0700]"
    assert d["VERDICT"] == "better"
    f = _row(rows, "childtuning.mode='childtuning-f'")
    assert f["Δ VS BASELINE"] == "-0.0150"
    assert f["CI95"] == "[-0.3000, +0.2700]"
    assert f["VERDICT"] == "within noise"


def test_the_baseline_and_the_best_cell_are_marked() -> None:
    rows = compare_rows(SUMMARY)
    marks = {r[1]: r[0] for r in rows}
    assert marks == {
        "childtuning.mode='vanilla'": "baseline",
        "childtuning.mode='childtuning-d'": "best",
        "childtuning.mode='childtuning-f'": "",
    }
    base = _row(rows, "childtuning.mode='vanilla'")
    assert (base["Δ VS BASELINE"], base["CI95"], base["VERDICT"]) == ("-", "-", "-")

    # the baseline itself the best: both marks
    summary = copy.deepcopy(SUMMARY)
    summary["best_cell"] = "childtuning.mode='vanilla'"
    assert compare_rows(summary)[0][0] == "baseline,best"


def test_unknown_scores_show_a_dash() -> None:
    summary = copy.deepcopy(SUMMARY)
    summary["status"] = "running"
    summary["best_cell"] = None
    summary["cells"][1].update(n=1, mean=0.66, std=None, min=0.66, max=0.66)
    summary["cells"][1]["vs_baseline"] = {"n": 1, "mean_diff": 0.04, "ci95": None, "verdict": "too few seeds"}
    summary["cells"][2].update(n=0, mean=None, std=None, min=None, max=None, scores={})
    summary["cells"][2]["vs_baseline"] = {"n": 0, "mean_diff": None, "ci95": None, "verdict": "too few seeds"}
    rows = compare_rows(summary)
    assert all(r[0] != "best" for r in rows)
    one = _row(rows, "childtuning.mode='childtuning-d'")
    assert (one["MEAN ± STD"], one["Δ VS BASELINE"], one["CI95"]) == ("0.6600", "+0.0400", "-")
    assert one["VERDICT"] == "too few seeds"
    none = _row(rows, "childtuning.mode='childtuning-f'")
    assert none["N"] == "0"
    assert [none[k] for k in ("MEAN ± STD", "MIN", "MAX", "Δ VS BASELINE", "CI95")] == ["-"] * 5
    assert none["VERDICT"] == "too few seeds"


def test_no_baseline_no_comparison() -> None:
    summary = copy.deepcopy(SUMMARY)
    summary["baseline"] = None
    for cell in summary["cells"]:
        cell.update(baseline=False, vs_baseline=None)
    rows = compare_rows(summary)
    assert [r[6:] for r in rows] == [["-", "-", "-"]] * 3
    assert "baseline none" in compare_header(summary)


def test_the_header_line_names_the_metric_and_the_score_kind() -> None:
    line = compare_header(SUMMARY)
    assert "exp-0123456789abcdef (rte modes): succeeded" in line
    assert "metric accuracy (final score of each job, higher is better)" in line
    assert "baseline childtuning.mode='vanilla'" in line
    summary = {**SUMMARY, "metric": None, "score": "best", "higher_is_better": False, "name": None}
    line = compare_header(summary)
    assert "metric main metric (best score of each job, lower is better)" in line


def test_the_csv_parses_with_a_row_per_cell() -> None:
    text = compare_csv(SUMMARY)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [*COMPARE_CSV_HEADER, MODE]
    assert len(rows) == 1 + len(SUMMARY["cells"])
    records = list(csv.DictReader(io.StringIO(text)))
    d = next(r for r in records if r["label"] == "childtuning.mode='childtuning-d'")
    assert (d["best"], d["baseline"], d["verdict"], d[MODE]) == ("yes", "", "better", "childtuning-d")
    assert float(d["mean"]) == 0.665 and float(d["mean_diff"]) == 0.045
    assert (float(d["ci95_low"]), float(d["ci95_high"])) == (0.02, 0.07)
    base = next(r for r in records if r["baseline"] == "yes")
    assert base["mean_diff"] == base["ci95_low"] == base["verdict"] == ""
    # the label's quotes and commas survive the round trip
    summary = copy.deepcopy(SUMMARY)
    summary["cells"][0]["label"] = "childtuning.mode='vanilla', childtuning.reserve_p=0.3"
    again = list(csv.reader(io.StringIO(compare_csv(summary))))
    assert again[1][0] == "childtuning.mode='vanilla', childtuning.reserve_p=0.3"
    assert len(again) == 4


def test_format_table_pads_and_aligns() -> None:
    text = format_table(["A", "NUM", "Z"], [["xx", "1", ""], ["y", "123", "end"]], right=(1,))
    assert text.splitlines() == ["A   NUM  Z", "xx    1", "y   123  end"]


def test_print_compare_puts_every_cell_under_the_header() -> None:
    out = io.StringIO()
    print_compare(SUMMARY, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == compare_header(SUMMARY)
    assert lines[1].split()[:2] == ["CELL", "N"]
    assert len(lines) == 2 + len(SUMMARY["cells"])
    assert lines[2].startswith("baseline  childtuning.mode='vanilla'")
    assert all(line == line.rstrip() for line in lines)


def test_job_rows_show_each_axis_status_step_and_score() -> None:
    summary = copy.deepcopy(SUMMARY)
    summary["jobs"][2].update(status="running", phase="training", step=12, score=None)
    summary["jobs"][3].update(status="queued", step=0, total_steps=None, score=None)
    header, rows = job_rows(summary)
    assert header == ["JOB", "MODE", "SEED", "STATUS", "PHASE", "STEP", "SCORE", "ERROR"]
    by_id = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert len(rows) == len(summary["jobs"])
    done = by_id[f"job-{1:016x}"]
    assert (done["MODE"], done["SEED"], done["STEP"], done["SCORE"]) == ("vanilla", "42", "40/40", "0.6100")
    running = by_id[f"job-{3:016x}"]
    assert (running["STATUS"], running["PHASE"], running["STEP"], running["SCORE"]) == (
        "running",
        "training",
        "12/40",
        "-",
    )
    assert by_id[f"job-{4:016x}"]["STEP"] == "0/?"
    assert by_id[f"job-{9:016x}"]["ERROR"] == "CUDA out of memory"  # the first line only


def test_axis_columns_keep_full_paths_where_short_names_clash() -> None:
    summary = {
        "axes": {"hyperparameters.seed": [1], "dataset.seed": [2]},
        "jobs": [
            {"id": "job-1", "values": {"hyperparameters.seed": 1, "dataset.seed": 2}, "status": "queued"}
        ],
    }
    header, rows = job_rows(summary)
    assert header[1:3] == ["HYPERPARAMETERS.SEED", "DATASET.SEED"]
    assert rows[0][:3] == ["job-1", "1", "2"]


def test_status_text_lists_counts_and_jobs() -> None:
    out = io.StringIO()
    print_experiment_status(SUMMARY, out)
    text = out.getvalue()
    assert "experiment exp-0123456789abcdef (rte modes): succeeded" in text
    assert "jobs: 9/9 finished: 8 succeeded, 1 failed; at most 2 at once" in text
    assert "best cell: childtuning.mode='childtuning-d'" in text
    assert text.count("job-") == 9


def test_counts_text_and_list_rows() -> None:
    counts = {"waiting": 2, "queued": 3, "running": 2, "succeeded": 1, "failed": 0, "cancelled": 0}
    assert counts_text(counts) == "1 succeeded, 2 running, 3 queued (2 waiting)"
    assert counts_text({}) == "no jobs"
    running = {
        **SUMMARY,
        "status": "running",
        "name": None,
        "counts": counts,
        "best_cell": None,
        "cancel_requested": True,
    }
    del running["jobs"]  # a listing may leave the jobs out: the total comes from the counts
    rows = list_rows([SUMMARY, running])
    assert rows[0][:4] == ["exp-0123456789abcdef", "rte modes", "succeeded", "9/9"]
    assert rows[0][5] == "childtuning.mode='childtuning-d'"
    assert rows[1][1:6] == ["-", "running (cancel requested)", "1/6", counts_text(counts), "-"]


def test_watch_lines_for_status_changes_and_running_steps() -> None:
    before = {job["id"]: {**job, "status": "queued"} for job in SUMMARY["jobs"]}
    now = copy.deepcopy(SUMMARY["jobs"])
    now[0]["status"] = "queued"
    now[1].update(status="running", step=7, total_steps=40)
    lines = job_changes(before, now)
    assert lines[0] == f"job-{2:016x} (mode=vanilla, seed=52): running"
    assert lines[1] == f"job-{3:016x} (mode=vanilla, seed=57): succeeded, score 0.6200"
    assert lines[-1] == f"job-{9:016x} (mode=childtuning-f, seed=57): failed: CUDA out of memory"
    assert len(lines) == 8  # job 1 stayed queued
    assert job_changes({}, [now[0]]) == []  # a new queued job is not news
    assert running_text(now) == f"job-{2:016x} (mode=vanilla, seed=52) 7/40"
    assert running_text(SUMMARY["jobs"]) == ""


def test_the_bar_shows_running_steps_else_the_counts() -> None:
    summary = copy.deepcopy(SUMMARY)
    summary["jobs"][0].update(status="running", step=12, total_steps=40)
    summary["jobs"][1].update(status="running", step=3, total_steps=None)
    summary["counts"] = {"waiting": 1, "queued": 3, "running": 2, "succeeded": 4, "failed": 0, "cancelled": 0}
    assert bar_postfix(summary) == "running 12/40 3/?, 3 queued (1 waiting)"
    assert bar_postfix(SUMMARY) == "8 succeeded, 1 failed"
