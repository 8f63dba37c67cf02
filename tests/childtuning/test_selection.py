"""Exact distributed top-k (childtuning.selection): one process vs brute force, 2 and 4 gloo ranks
vs one process, and argument validation."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from childtuning import selection
from childtuning.selection import Selection, kth_largest, select_top_k
from service.core.procs import free_port

N = 3000
KS = [0, 1, 17, 900, 1500, N - 1, N]


def brute_force(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k by score descending, ties by position (index) ascending: a stable descending sort."""
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    return keep


def expected_selection(scores: torch.Tensor, k: int) -> Selection:
    if k == 0:
        return Selection(float("inf"), 0, scores.numel(), 0, int(torch.isinf(scores).sum()), 0)
    t = float(torch.sort(scores, descending=True).values[k - 1])
    greater = int((scores > t).sum())
    return Selection(t, k, scores.numel(), greater, int((scores == t).sum()), k - greater)


def make_cases() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(N, generator=g).pow(2)
    zeros = rand.clone()
    zeros[torch.rand(N, generator=g) < 0.6] = 0.0  # most elements tie at zero
    few = torch.randint(0, 4, (N,), generator=g).float()  # four distinct values: heavy ties everywhere
    # eight values sharing their high 16 bits: round 2 separates them, the tie-break sees both
    near = 1.0 + torch.randint(0, 8, (N,), generator=g).float() * 2.0**-20
    tiny = torch.rand(N, generator=g) * 1e-38  # subnormals and the smallest normals
    inf = rand.clone()
    inf[torch.randperm(N, generator=g)[:40]] = float("inf")
    same = torch.full((N,), 0.25)
    return {
        "random": rand,
        "zeros": zeros,
        "few-values": few,
        "near-ties": near,
        "tiny": tiny,
        "inf": inf,
        "all-equal": same,
    }


CASES = make_cases()


def split(scores: torch.Tensor, cuts: list[int]) -> list[tuple[torch.Tensor, int]]:
    edges = [0, *cuts, scores.numel()]
    return [(scores[a:b].clone(), a) for a, b in itertools.pairwise(edges)]


def assemble(pieces: list[tuple[int, torch.Tensor]], n: int) -> torch.Tensor:
    full = torch.zeros(n, dtype=torch.bool)
    seen = torch.zeros(n, dtype=torch.int64)
    for start, m in pieces:
        full[start : start + m.numel()] = m
        seen[start : start + m.numel()] += 1
    assert bool((seen == 1).all()), "fragments must cover every position exactly once"
    return full


# ---------------------------------------------------------------------------------------------
# single process


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("k", KS)
def test_matches_brute_force(name: str, k: int) -> None:
    scores = CASES[name]
    frags = split(scores, [0, 5, 1000, 1000, 2222, 2999])  # uneven, with empty fragments
    for chunk in (7, 257, 1 << 22):
        masks, sel = select_top_k(frags, k, chunk_numel=chunk)
        assert [m.shape for m in masks] == [s.shape for s, _ in frags]
        assert all(m.dtype == torch.bool for m in masks)
        got = torch.cat(masks)
        assert int(got.sum()) == k
        assert torch.equal(got, brute_force(scores, k)), (name, k, chunk)
        assert sel == expected_selection(scores, k)
        assert kth_largest([s for s, _ in frags], k, chunk_numel=chunk) == (
            sel.threshold,
            sel.num_greater,
            sel.num_tied,
        )


@pytest.mark.parametrize("limit", [0, 1 << 30])
def test_tie_break_with_and_without_round2_cache(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tie-break counts tied positions either from the cached round-2 elements or by a scan."""
    monkeypatch.setattr(selection, "_cache_limit", lambda chunk_numel: limit)
    for name in ("zeros", "few-values", "near-ties", "tiny", "all-equal"):
        scores = CASES[name]
        frags = split(scores, [0, 5, 1000, 1000, 2222, 2999])
        for k in (1, 17, 1500, N - 1):
            masks, _ = select_top_k(frags, k, chunk_numel=100)
            assert torch.equal(torch.cat(masks), brute_force(scores, k)), (name, k, limit)


def test_threshold_is_exact_float32_value() -> None:
    scores = CASES["random"]
    k = 1234
    t, _, _ = kth_largest([scores], k)
    assert t == float(torch.kthvalue(scores, N - k + 1).values)
    assert torch.tensor(t, dtype=torch.float32).item() == t  # representable: a float32 score


@pytest.mark.parametrize("limit", [0, 1 << 30])
@pytest.mark.parametrize("name", ["few-values", "near-ties"])
def test_positions_decide_ties_not_fragment_order(
    name: str, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fragments given out of position order, with gaps between positions and positions above
    2**32 and 2**48 (three and four radix rounds): ties still go to the lowest positions."""
    monkeypatch.setattr(selection, "_cache_limit", lambda chunk_numel: limit)
    scores = CASES[name]
    for base in (0, 1 << 40, (1 << 61) - 10 * N):
        frags = [(s, base + 7 * a) for s, a in split(scores, [100, 1700, 2500])]  # gaps of 6 elements
        frags.reverse()
        for k in (1, 901, 2999):
            masks, sel = select_top_k(frags, k, chunk_numel=64)
            got = torch.cat(list(reversed(masks)))  # back in position order
            assert torch.equal(got, brute_force(scores, k)), (base, k)
            assert sel.num_tied_kept == k - sel.num_greater


def test_strided_fragment_and_numpy_int() -> None:
    base = CASES["zeros"]
    strided = torch.stack([base, base]).t().reshape(-1)[::2]  # equals base, stride 2
    assert not strided.is_contiguous()
    masks, sel = select_top_k([(strided, 0)], np.int64(1000), chunk_numel=100)  # type: ignore[arg-type]
    assert torch.equal(masks[0], brute_force(base, 1000))
    assert type(sel.k) is int and sel.k == 1000


def test_empty_input() -> None:
    masks, sel = select_top_k([(torch.empty(0), 0)], 0)
    assert masks[0].numel() == 0 and sel == Selection(float("inf"), 0, 0, 0, 0, 0)
    assert select_top_k([], 0)[1].num_elements == 0


@pytest.mark.parametrize(
    ("frags", "k", "kwargs", "match"),
    [
        ([(torch.tensor([1.0, -1.0]), 0)], 1, {}, r"^fragments: scores must be non-negative"),
        ([(torch.tensor([1.0, -0.0]), 0)], 1, {}, r"^fragments: scores must be non-negative"),
        ([(torch.tensor([1.0, float("nan")]), 0)], 1, {}, r"^fragments: scores must be non-negative"),
        (
            [(torch.tensor([0x7F800001], dtype=torch.int32).view(torch.float32), 0)],  # NaN next to inf
            1,
            {},
            r"^fragments: scores must be non-negative",
        ),
        (
            [(torch.tensor([1.0, 2.0], dtype=torch.float64), 0)],
            1,
            {},
            r"^fragments: scores must be 1-D float32",
        ),
        ([(torch.ones(2, 2), 0)], 1, {}, r"^fragments: scores must be 1-D float32"),
        ([([1.0, 2.0], 0)], 1, {}, r"^fragments: scores must be 1-D float32"),
        ([torch.ones(3)], 1, {}, r"^fragments: "),
        ([(torch.ones(3), -1)], 1, {}, r"^fragments: global_start"),
        ([(torch.ones(3), 1.5)], 1, {}, r"^fragments: global_start"),
        ([(torch.ones(3), 0)], 4, {}, r"^k: must be in \[0, N\] with N = 3"),
        ([(torch.ones(3), 0)], -1, {}, r"^k: must be in \[0, N\]"),
        ([(torch.ones(3), 0)], 1.0, {}, r"^k: must be an integer"),
        ([(torch.ones(3), 0)], True, {}, r"^k: must be an integer"),
        ([(torch.ones(3), 0)], 1, {"chunk_numel": 0}, r"^chunk_numel: must be an integer >= 1"),
    ],
)
def test_bad_arguments(frags: list, k: object, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select_top_k(frags, k, **kwargs)  # type: ignore[arg-type]


def test_kth_largest_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"^fragments: scores must be non-negative"):
        kth_largest([torch.tensor([-2.0])], 1)
    with pytest.raises(ValueError, match=r"^k: must be in \[0, N\]"):
        kth_largest([torch.ones(2), torch.ones(3)], 6)


# ---------------------------------------------------------------------------------------------
# several ranks (gloo on CPU)

PARAM_SIZES = [700, 3, 1, 1200, 0, 96, 1000]  # "parameters" laid end to end: N positions
MULTI_CASES = ["zeros", "near-ties", "inf", "random"]
MULTI_KS = [0, 1, 900, 2100, N - 1, N]


def rank_fragments(rank: int, world: int, scores: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """ZeRO-like ownership: the flat vector is cut into `world` uneven contiguous partitions; a rank
    owns the intersection of its partition with each parameter, so parameters straddle ranks.
    Rank 0 owns nothing at world size 4; fragments are listed in reverse position order."""
    weights = [0, 3, 1, 2] if world == 4 else [1, 2]
    cum = list(itertools.accumulate([0, *weights]))
    edges = [N * c // cum[-1] for c in cum]
    lo, hi = edges[rank], edges[rank + 1]
    frags = []
    start = 0
    for size in PARAM_SIZES:
        a, b = max(lo, start), min(hi, start + size)
        if a < b:
            frags.append((scores[a:b].clone(), a))
        start += size
    return frags[::-1]


def _rank_main(rank: int, world: int, port: int, workdir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        out: dict = {}
        cases = torch.load(Path(workdir) / "cases.pt")
        for name in MULTI_CASES:
            frags = rank_fragments(rank, world, cases[name])
            for k in MULTI_KS:
                masks, sel = select_top_k(frags, k, chunk_numel=37 + 64 * rank)  # chunking differs per rank
                kth = kth_largest([s for s, _ in frags], k)
                out[(name, k)] = ([(a, m) for (_, a), m in zip(frags, masks, strict=True)], sel, kth)
        # distributed=False: every rank holds all the scores, nothing is reduced (no collective)
        masks, sel = select_top_k([(cases["near-ties"], 0)], 1234, distributed=False)
        out["replicated"] = (masks[0], sel, kth_largest([cases["near-ties"]], 1234, distributed=False))
        # Errors are collective: only one rank sees a bad score / a different k, all ranks raise.
        errors = []
        bad = [(torch.tensor([1.0, float("nan") if rank == world - 1 else 2.0]), 10 * rank)]
        for frags, k in ((bad, 1), ([(torch.ones(3), 3 * rank)], 1 + (rank == 1))):
            try:
                select_top_k(frags, k)
                errors.append("")
            except ValueError as e:
                errors.append(str(e))
        out["errors"] = errors
        (Path(workdir) / f"rank{rank}.pkl").write_bytes(pickle.dumps(out))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_agree_with_one_process(world: int, tmp_path: Path) -> None:
    torch.save({name: CASES[name] for name in MULTI_CASES}, tmp_path / "cases.pt")
    mp.spawn(_rank_main, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    results = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(world)]
    for name in MULTI_CASES:
        scores = CASES[name]
        for k in MULTI_KS:
            pieces = [p for res in results for p in res[(name, k)][0]]
            full = assemble(pieces, N)
            single, sel1 = select_top_k([(scores, 0)], k)
            assert torch.equal(full, single[0]), (name, k)  # bit for bit
            assert torch.equal(full, brute_force(scores, k)), (name, k)
            for res in results:
                assert res[(name, k)][1] == sel1
                assert res[(name, k)][2] == (sel1.threshold, sel1.num_greater, sel1.num_tied)
    single, sel1 = select_top_k([(CASES["near-ties"], 0)], 1234)
    for res in results:
        assert torch.equal(res["replicated"][0], single[0])
        assert res["replicated"][1] == sel1
        assert res["replicated"][2] == (sel1.threshold, sel1.num_greater, sel1.num_tied)
    for res in results:
        nan_error, k_error = res["errors"]
        assert nan_error.startswith("fragments: "), nan_error
        assert k_error.startswith("k: must be the same on every rank"), k_error
