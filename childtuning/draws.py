"""Counter-based Bernoulli draws: the F and update-dropout masks.

Element ``e`` of parameter ``j`` is kept at step ``t`` iff ``hash(seed, t, j, e) < p * 2**32``.
The draw depends on nothing but those four numbers, so a rank that owns elements
``[start, start + n)`` of a parameter computes exactly the bits that a single process would:
the mask of step t is the same whatever the world size or ZeRO stage, and no RNG state has
to be saved or restored on resume.

The hash is a two-round 32-bit integer finaliser (the "lowbias32" constants from Chris
Wellons' hash prospector) over the element index, keyed by a 32-bit mix of (seed, step,
parameter). All arithmetic is int64 holding uint32 values, masked after each multiply, so
it is exact in eager mode, in torch.compile'd kernels and on any device.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit mixer on int64 tensors holding uint32 values."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def _mix32_int(x: int) -> int:
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def step_key(seed: int, step: int) -> int:
    """The 32-bit key of one step's draws, shared by every parameter (see :func:`draw_key`)."""
    k = _mix32_int(seed ^ _GOLDEN)
    k = _mix32_int(k ^ (seed >> 32))
    k = _mix32_int(k ^ (step & _M32))
    return _mix32_int(k ^ (step >> 32))


def draw_key(seed: int, step: int, param_index: int) -> int:
    """The 32-bit key of one parameter's draw at one step."""
    return _mix32_int(step_key(seed, step) ^ param_index)


def param_key(step_key: torch.Tensor, param_index: torch.Tensor) -> torch.Tensor:
    """:func:`draw_key` on the device, from the step's key and the parameter's index (int64
    tensors): a kernel computes each parameter's key itself, so a step's draws need one
    host-to-device write (the step's key) whatever the number of parameters."""
    return mix32((step_key ^ param_index) & _M32)


def keep_threshold(reserve_p: float) -> int:
    """An element is kept iff its 32-bit hash is below this (p = 1 keeps everything)."""
    return min(round(reserve_p * 2**32), 2**32)


def hash_elements(key: torch.Tensor | int, index: torch.Tensor) -> torch.Tensor:
    """uint32 hashes (in int64) of element indices ``index`` (int64) under ``key``."""
    h = mix32((index & _M32) ^ key)
    return mix32(h ^ (index >> 32))


def keep_mask(
    seed: int,
    step: int,
    param_index: int,
    start: int,
    numel: int,
    reserve_p: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The keep bits (bool, length ``numel``) of elements ``[start, start + numel)``."""
    index = torch.arange(start, start + numel, dtype=torch.int64, device=device)
    return hash_elements(draw_key(seed, step, param_index), index) < keep_threshold(reserve_p)
