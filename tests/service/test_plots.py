"""service.core.plots: each plot is a real PNG of a plausible size, the empty experiment still
renders, render_cached redraws only when the plotted data changes, and importing the module
loads no matplotlib (nor torch)."""

from __future__ import annotations

import copy
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.core import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]
MODES = ["vanilla", "childtuning-d"]
PS = [0.1, 0.3]
SEEDS = [42, 52, 62]


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{path}={value!r}" for path, value in values.items())


def _experiment() -> tuple[dict[str, Any], dict[str, Any]]:
    """A finished 2 modes x 2 p x 3 seeds grid: its summary and its curves, as the API serves them."""
    cells, curve_cells = [], []
    for i, mode in enumerate(MODES):
        for j, p in enumerate(PS):
            values = {"childtuning.mode": mode, "childtuning.reserve_p": p}
            base = 0.50 + 0.04 * i + 0.01 * j
            scores = {str(seed): round(base + 0.01 * (k - 1), 4) for k, seed in enumerate(SEEDS)}
            vals = list(scores.values())
            mean = sum(vals) / len(vals)
            std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
            baseline = mode == "vanilla"
            cells.append(
                {
                    "label": _label(values),
                    "values": values,
                    "n": len(vals),
                    "mean": mean,
                    "std": std,
                    "min": min(vals),
                    "max": max(vals),
                    "scores": scores,
                    "baseline": baseline,
                    "vs_baseline": None
                    if baseline
                    else {
                        "n": 3,
                        "mean_diff": mean - 0.505,
                        "ci95": [mean - 0.52, mean - 0.49],
                        "verdict": "better" if j else "within noise",
                    },
                }
            )
            points = [
                {
                    "step": step,
                    "n": 3,
                    "mean": base * step / 300,
                    "std": 0.01,
                    "min": base * step / 300 - 0.01,
                    "max": base * step / 300 + 0.01,
                }
                for step in (100, 200, 300)
            ]
            curve_cells.append({"label": _label(values), "values": values, "points": points})
    summary = {
        "id": "exp-0123456789abcdef",
        "name": "cola childtuning sweep",
        "metric": "mcc",
        "score": "final",
        "higher_is_better": True,
        "axes": {"childtuning.mode": MODES, "childtuning.reserve_p": PS, "hyperparameters.seed": SEEDS},
        "seed_axis": "hyperparameters.seed",
        "baseline": {"childtuning.mode": "vanilla"},
        "cells": cells,
        "best_cell": cells[-1]["label"],
    }
    return summary, {"metric": "mcc", "cells": curve_cells}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _assert_png(path: Path) -> None:
    width, height = _png_size(path)
    assert width > 300
    assert height > 200


@pytest.mark.parametrize("name", plots.PLOTS)
def test_each_plot_renders_a_png(name: str, tmp_path: Path) -> None:
    summary, curves = _experiment()
    out = plots.render(name, summary, curves, tmp_path / name)
    assert out == tmp_path / name
    _assert_png(out)
    assert name in plots.DESCRIPTIONS
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_scores_without_a_p_axis_renders_bars(tmp_path: Path) -> None:
    summary, curves = _experiment()
    summary["axes"] = {"childtuning.mode": MODES, "hyperparameters.seed": SEEDS}
    summary["cells"] = [c for c in summary["cells"] if c["values"]["childtuning.reserve_p"] == 0.1]
    for cell in summary["cells"]:
        del cell["values"]["childtuning.reserve_p"]
    summary["best_cell"] = summary["cells"][-1]["label"]
    _assert_png(plots.render("scores.png", summary, curves, tmp_path / "scores.png"))


def test_partly_finished_and_empty_experiments_render(tmp_path: Path) -> None:
    summary, curves = _experiment()
    partial = copy.deepcopy(summary)
    first = partial["cells"][0]
    first.update(n=0, mean=None, std=None, min=None, max=None, scores={}, vs_baseline=None)
    for name in plots.PLOTS:
        _assert_png(plots.render(name, partial, curves, tmp_path / f"partial-{name}"))

    empty = copy.deepcopy(summary)
    empty["best_cell"] = None
    for cell in empty["cells"]:
        cell.update(n=0, mean=None, std=None, min=None, max=None, scores={}, vs_baseline=None)
    no_curves = {"metric": "mcc", "cells": [{**c, "points": []} for c in curves["cells"]]}
    for name in plots.PLOTS:
        _assert_png(plots.render(name, empty, no_curves, tmp_path / f"empty-{name}"))
    bare = {"id": "exp-0000000000000000", "metric": None, "score": "best", "cells": []}
    for name in plots.PLOTS:
        _assert_png(plots.render(name, bare, {"metric": None, "cells": []}, tmp_path / f"bare-{name}"))


def test_unknown_plot_name_raises(tmp_path: Path) -> None:
    summary, curves = _experiment()
    with pytest.raises(ValueError, match=r"curves\.png"):
        plots.render("nope.png", summary, curves, tmp_path / "nope.png")
    with pytest.raises(ValueError, match=r"scores\.png"):
        plots.render_cached("nope.png", summary, curves, tmp_path)
    with pytest.raises(ValueError):
        plots.fingerprint(summary, curves, "nope.png")
    assert not (tmp_path / "nope.png").exists()


def test_fingerprint_follows_the_data() -> None:
    summary, curves = _experiment()
    digest = plots.fingerprint(summary, curves)
    assert digest == plots.fingerprint(copy.deepcopy(summary), copy.deepcopy(curves))
    changed = copy.deepcopy(summary)
    changed["cells"][1]["scores"]["42"] = 0.1
    assert plots.fingerprint(changed, curves) != digest
    assert plots.fingerprint(changed, curves, "seeds.png") != plots.fingerprint(summary, curves, "seeds.png")
    more = copy.deepcopy(curves)
    more["cells"][0]["points"].append({"step": 400, "n": 3, "mean": 0.6, "std": 0.0, "min": 0.6, "max": 0.6})
    assert plots.fingerprint(summary, more) != digest
    assert plots.fingerprint(summary, more, "curves.png") != plots.fingerprint(summary, curves, "curves.png")
    # each plot's fingerprint covers only what it draws
    assert plots.fingerprint(summary, more, "scores.png") == plots.fingerprint(summary, curves, "scores.png")


def test_render_cached_redraws_only_on_change(tmp_path: Path) -> None:
    summary, curves = _experiment()
    folder = tmp_path / "plots"
    for name in plots.PLOTS:
        out = plots.render_cached(name, summary, curves, folder)
        assert out == folder / name
        _assert_png(out)
        sidecar = folder / f".{name}.sha"
        assert sidecar.read_text().strip() == plots.fingerprint(summary, curves, name)
        before = out.stat()

        assert plots.render_cached(name, copy.deepcopy(summary), copy.deepcopy(curves), folder) == out
        after = out.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

        changed_summary, changed_curves = copy.deepcopy(summary), copy.deepcopy(curves)
        changed_summary["name"] = "renamed sweep"
        changed_curves["cells"][0]["points"][0]["mean"] = 0.0
        plots.render_cached(name, changed_summary, changed_curves, folder)
        assert out.stat().st_ino != before.st_ino  # a new file, renamed into place
        assert sidecar.read_text().strip() == plots.fingerprint(changed_summary, changed_curves, name)
        _assert_png(out)

    # a missing PNG is redrawn even when its sidecar matches
    (folder / "seeds.png").unlink()
    _assert_png(plots.render_cached("seeds.png", summary, curves, folder))
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".tmp") == []


def test_import_is_cheap_and_pyplot_free(tmp_path: Path) -> None:
    summary, curves = _experiment()
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import service.core.plots as plots\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at module import'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        f"summary, curves = json.loads({json_text(summary)!r}), json.loads({json_text(curves)!r})\n"
        f"plots.render('scores.png', summary, curves, Path({str(tmp_path / 'scores.png')!r}))\n"
        "assert 'matplotlib' in sys.modules\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    _assert_png(tmp_path / "scores.png")


def json_text(data: Any) -> str:
    import json

    return json.dumps(data)
