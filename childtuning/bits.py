"""Bit-packed boolean masks: 8 elements a byte, element i in bit (i % 8) of byte i // 8."""

from __future__ import annotations

import torch

_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def packed_numel(numel: int) -> int:
    return (numel + 7) // 8


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A 1-D bool tensor -> uint8 tensor of ceil(n / 8) bytes."""
    if mask.dtype != torch.bool or mask.dim() != 1:
        raise ValueError("pack_bits: expects a 1-D bool tensor")
    n = mask.numel()
    padded = torch.zeros(packed_numel(n) * 8, dtype=torch.uint8, device=mask.device)
    padded[:n] = mask
    weights = _WEIGHTS.to(mask.device)
    return (padded.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """The inverse of :func:`pack_bits`: a bool tensor of ``numel`` elements."""
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != packed_numel(numel):
        raise ValueError(f"unpack_bits: expects {packed_numel(numel)} uint8 bytes for {numel} elements")
    weights = _WEIGHTS.to(packed.device)
    return ((packed.unsqueeze(1) & weights) != 0).view(-1)[:numel]


def unpack_range(packed: torch.Tensor, start: int, numel: int) -> torch.Tensor:
    """Bits ``[start, start + numel)`` of a packed mask, without unpacking the rest."""
    first, last = start // 8, (start + numel + 7) // 8
    chunk = packed[first:last]
    weights = _WEIGHTS.to(packed.device)
    bits = ((chunk.unsqueeze(1) & weights) != 0).view(-1)
    offset = start - first * 8
    return bits[offset : offset + numel]
