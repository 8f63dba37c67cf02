"""Exact distributed top-k: single process vs brute force, and 2/4 gloo ranks vs one."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from childtuning.selection import kth_largest, select_top_k


def brute_force(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k by (score descending, position ascending)."""
    order = sorted(range(scores.numel()), key=lambda i: (-scores[i].item(), i))
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    return keep


def split(scores: torch.Tensor, cuts: list[int]) -> list[tuple[torch.Tensor, int]]:
    edges = [0, *cuts, scores.numel()]
    return [(scores[a:b].clone(), a) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    n = 3000
    rand = torch.randn(n, generator=g).pow(2)
    zeros = rand.clone()
    zeros[torch.rand(n, generator=g) < 0.6] = 0.0  # most ties at zero
    few = torch.randint(0, 4, (n,), generator=g).float()  # only four distinct values
    tiny = torch.rand(n, generator=g) * 1e-30  # subnormal-ish range, same exponent bins
    return [("random", rand), ("zeros", zeros), ("few-values", few), ("tiny", tiny)]


@pytest.mark.parametrize(("name", "scores"), cases())
@pytest.mark.parametrize("k", [0, 1, 17, 900, 1500, 2999, 3000])
def test_matches_brute_force(name, scores, k):
    frags = split(scores, [0, 5, 1000, 1000, 2222])  # uneven, with empty fragments
    masks, sel = select_top_k(frags, k, chunk_numel=257)
    got = torch.cat(masks)
    assert int(got.sum()) == k
    assert torch.equal(got, brute_force(scores, k)), name
    if k:
        assert sel.threshold == float(torch.sort(scores, descending=True).values[k - 1])
        assert sel.num_greater == int((scores > sel.threshold).sum())
        assert sel.num_tied == int((scores == sel.threshold).sum())
        assert sel.num_tied_kept == k - sel.num_greater


def test_kth_largest_with_infinities():
    s = torch.tensor([1.0, float("inf"), 3.0, float("inf")])
    assert kth_largest([s], 1) == (float("inf"), 0, 2)
    assert kth_largest([s], 3) == (3.0, 2, 1)


@pytest.mark.parametrize(
    ("frags", "k", "match"),
    [
        ([(torch.tensor([1.0, -1.0]), 0)], 1, "scores: must be non-negative"),
        ([(torch.tensor([1.0, float("nan")]), 0)], 1, "scores: must be non-negative"),
        ([(torch.tensor([1.0, 2.0], dtype=torch.float64), 0)], 1, "scores: each fragment"),
        ([(torch.ones(2, 2), 0)], 1, "scores: each fragment"),
        ([(torch.ones(3), 0)], 4, r"k: must be an integer in \[0, 3\]"),
        ([(torch.ones(3), 0)], -1, r"k: must be an integer"),
    ],
)
def test_bad_arguments(frags, k, match):
    with pytest.raises(ValueError, match=match):
        select_top_k(frags, k)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, scores: torch.Tensor, k: int, out) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        n = scores.numel()
        # rank r owns an uneven, interleaved set of ranges: positions are global
        bounds = torch.linspace(0, n, 4 * world + 1).long().tolist()
        mine = [(scores[a:b].clone(), a) for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
                if j % world == rank]
        masks, sel = select_top_k(mine, k, chunk_numel=101)
        out.put((rank, [(a, m.tolist()) for (_, a), m in zip(mine, masks, strict=True)], sel))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_agree_with_one_process(world):
    _, scores = cases()[1]  # many ties: exercises the distributed tie-break
    k = 1234
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, scores, k, out)) for r in range(world)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in range(world)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    full = torch.zeros(scores.numel(), dtype=torch.bool)
    for _, parts, _ in results:
        for start, m in parts:
            full[start : start + len(m)] = torch.tensor(m, dtype=torch.bool)
    single, sel1 = select_top_k([(scores, 0)], k)
    assert torch.equal(full, single[0])
    assert torch.equal(full, brute_force(scores, k))
    assert all(sel == sel1 for _, _, sel in results)
