"""Sampling across ranks: the shuffled order of each epoch, each rank's part of every global batch.

:func:`shard_indices` deals each rank its part of every global batch, identically for any
number of ranks; :func:`eval_shard` splits evaluation without dropping anything. torch is
imported inside :func:`epoch_permutation`, never at import time.
"""

from __future__ import annotations

import hashlib


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.blake2b(f"childtune/shuffle/{seed}/{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def epoch_permutation(num_examples: int, epoch: int, seed: int) -> list[int]:
    """The shuffled order of epoch ``epoch``: ``torch.randperm`` on a CPU generator keyed by (seed, epoch).

    The same on every rank and every machine with the same torch version.
    """
    import torch

    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0 (got {num_examples})")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(_epoch_seed(seed, epoch))
    return [int(i) for i in torch.randperm(num_examples, generator=generator).tolist()]


def num_global_batches(num_examples: int, global_batch_size: int) -> int:
    """Full global batches per epoch (the last partial batch is dropped)."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1 (got {global_batch_size})")
    return max(0, num_examples) // global_batch_size


def shard_indices(
    num_examples: int,
    epoch: int,
    seed: int,
    rank: int,
    world_size: int,
    global_batch_size: int,
) -> list[int]:
    """The example indices rank ``rank`` processes in epoch ``epoch``, batch after batch.

    The epoch's order is :func:`epoch_permutation`; it is cut into global batches of
    ``global_batch_size`` and rank ``r`` takes the ``r``-th contiguous slice of
    ``global_batch_size / world_size`` examples of EACH global batch. Consecutive runs of that
    many indices in the result are the rank's micro-batches. Whatever ``world_size``, the
    examples of global batch ``b`` are the same, so a run's batches do not depend on its
    topology.

    The last partial global batch is DROPPED (its examples differ from epoch to epoch, as the
    order is reshuffled): splitting it would give ranks unequal batches, whose averaged
    gradients would no longer equal the single-process batch mean. Fewer examples than one
    global batch give an empty list.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1 (got {world_size})")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1} (got {rank})")
    if global_batch_size < 1 or global_batch_size % world_size:
        raise ValueError(
            f"global_batch_size ({global_batch_size}) must be a positive multiple of "
            f"world_size ({world_size})"
        )
    per_rank = global_batch_size // world_size
    batches = num_global_batches(num_examples, global_batch_size)
    order = epoch_permutation(num_examples, epoch, seed)
    out: list[int] = []
    for b in range(batches):
        start = b * global_batch_size + rank * per_rank
        out.extend(order[start : start + per_rank])
    return out


def eval_shard(num_examples: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous part of an evaluation set (nothing dropped, nothing repeated).

    The parts differ in size by at most one; concatenated in rank order they are ``0..n-1``, so
    gathered predictions line up with the labels.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size (got rank {rank}, world_size {world_size})")
    base, extra = divmod(max(0, num_examples), world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))
