"""The Fisher-memory benchmark's worker role at 1 and 2 ZeRO-3 ranks, on a tiny random Llama:
one record per rank, each rank scores its share of the elements, and the gathered masks agree."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.fisher_memory import compare_masks, run_world, summarise, table
from tests.workers.tiny import write_tiny_decoder

pytestmark = pytest.mark.slow


def test_each_rank_scores_its_share_and_the_mask_does_not_depend_on_the_ranks(tmp_path: Path) -> None:
    model = write_tiny_decoder(tmp_path / "model", family="llama")
    # char-level tokens: sst-2 prompts need up to ~250 of them
    args = argparse.Namespace(
        model=str(model), batches=2, global_batch=4, max_len=256, timeout=240.0, zero_extra=""
    )
    dirs = [tmp_path / "w1", tmp_path / "w2"]
    runs = [run_world(w, args, d) for w, d in zip((1, 2), dirs, strict=True)]
    for run in runs:
        run["summary"] = summarise(run)
    compare_masks(runs, dirs)
    one, two = runs[0]["ranks"], runs[1]["ranks"]
    assert [r["rank"] for r in one] == [0] and [r["rank"] for r in two] == [0, 1]
    total = one[0]["eligible_elements"]
    assert all(r["eligible_elements"] == total for r in one + two)
    # ZeRO-3 pads each parameter's partition to ceil(numel / W), but the fragments are clipped
    # to the real elements (the padding is owned by nobody), so the shares sum exactly to N.
    assert one[0]["elements_scored"] == total
    assert sum(r["elements_scored"] for r in two) == total
    assert all(r["score_bytes"] == 4 * r["elements_scored"] for r in one + two)
    for r in two:  # about half of one rank's: a parameter of odd size splits one element unevenly
        assert abs(r["score_bytes"] - one[0]["score_bytes"] / 2) <= 4 * r["fragments"]
    for r in one + two:
        assert r["num_fisher_batches"] == 2
        assert r["fisher"]["peak_mib"] >= r["fisher"]["baseline_mib"] > 0
        assert r["selection"]["peak_mib"] >= r["selection"]["baseline_mib"] > 0
        assert r["fisher_check"]["exact"] and r["synthetic_check"]["exact"]
        assert r["fisher_check"]["kept"] == round(0.3 * total)
    # the same mask at both world sizes: from the same scores, and from the Fisher pass
    # (the tiny model's scores differ at most in their last bits, none near the threshold)
    assert (
        runs[1]["synthetic_mask_same"] and runs[1]["synthetic_mask_sha256"] == one[0]["synthetic_mask_sha256"]
    )
    assert runs[1]["fisher_mask_same"] and runs[1]["fisher_mask_sha256"] == one[0]["fisher_mask_sha256"]
    rows = table(runs).splitlines()
    assert len(rows) == 4 and rows[2].startswith("| 1 |") and rows[3].startswith("| 2 |")
