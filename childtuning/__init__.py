"""ChildTuning on PyTorch and DeepSpeed ZeRO 0-3, with Fisher masks sharded per rank."""

from childtuning.config import MODES, ChildTuningConfig
from childtuning.delta import apply_delta, audit, write_delta
from childtuning.hf2021 import AdamWHF2021
from childtuning.hook import ChildTuning, ChildTuningHandle
from childtuning.masks_io import load_full_mask, mask_overlap

__all__ = [
    "MODES",
    "AdamWHF2021",
    "ChildTuning",
    "ChildTuningConfig",
    "ChildTuningHandle",
    "apply_delta",
    "audit",
    "load_full_mask",
    "mask_overlap",
    "write_delta",
]
