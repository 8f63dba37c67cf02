"""Where a rank's share of each parameter lives: the one module that knows ZeRO's shard layout.

A :class:`Fragment` is the contiguous range of a flattened parameter that this rank owns:
all of it without ZeRO (and at stage 0), a slice of DeepSpeed's flat fp32 partition at
stages 1 and 2 (a parameter may straddle two ranks, or be owned by none), and an even split
of ``ds_numel`` at stage 3. For each fragment the layout hands out 1-D views of the rank's
reduced gradient and of its fp32 master weights; writing into them changes what the
optimizer sees. Gradients are only valid between ``engine.backward`` and ``engine.step`` at
an accumulation boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True, slots=True)
class Fragment:
    """Elements ``[start, start + numel)`` of parameter ``name`` (flattened) owned by this rank."""

    name: str
    param_index: int  # position in model.named_parameters(): the same on every rank and topology
    start: int
    numel: int
    param_numel: int


@dataclass(frozen=True, slots=True)
class Segment:
    """A range of one optimizer tensor; ``fragment`` is None for elements no parameter owns."""

    offset: int
    numel: int
    fragment: Fragment | None


def named_trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def is_deepspeed_engine(obj: Any) -> bool:
    return hasattr(obj, "module") and hasattr(obj, "zero_optimization_stage") and hasattr(obj, "backward")


class Layout:
    """Plain PyTorch (or DeepSpeed stage 0, fp32): every rank owns every element."""

    stage: int = 0

    def __init__(self, module: nn.Module, group: Any = None) -> None:
        self.module = module
        self.group = group
        self.params: list[tuple[str, Any]] = named_trainable(module)
        self._index = {id(p): i for i, (_, p) in enumerate(self.params)}
        self.fragments = self._build_fragments()

    # -- topology ---------------------------------------------------------------------
    @property
    def distributed(self) -> bool:
        return self.stage > 0 and dist.is_initialized() and dist.get_world_size(self.group) > 1

    def _build_fragments(self) -> list[Fragment]:
        return [Fragment(n, i, 0, p.numel(), p.numel()) for i, (n, p) in enumerate(self.params)]

    def param(self, frag: Fragment) -> Any:  # DeepSpeed adds untyped attributes (_hp_mapping, ds_*)
        return self.params[frag.param_index][1]

    # -- views ------------------------------------------------------------------------
    def grad(self, frag: Fragment) -> torch.Tensor | None:
        g = self.param(frag).grad
        return None if g is None else g.detach().view(-1)

    def master(self, frag: Fragment) -> torch.Tensor:
        return self.param(frag).data.view(-1)

    def optimizer_segments(self, opt_param: torch.Tensor) -> list[Segment]:
        i = self._index.get(id(opt_param))
        if i is None:
            return [Segment(0, opt_param.numel(), None)]
        return [Segment(0, opt_param.numel(), self.fragments[i])]

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t


class Zero12Layout(Layout):
    """ZeRO stage 1/2 (and DeepSpeed's bf16 optimizer): ``p._hp_mapping`` gives the owned range."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.zero = engine.optimizer
        self.stage = engine.zero_optimization_stage() or 1
        super().__init__(engine.module)

    def _build_fragments(self) -> list[Fragment]:
        frags = []
        for i, (n, p) in enumerate(self.params):
            hm = p._hp_mapping
            if hm is None:  # owned by another rank
                continue
            frags.append(
                Fragment(
                    n, i, int(hm.lp_fragment_address.start), int(hm.lp_fragment_address.numel), p.numel()
                )
            )
        return frags

    def grad(self, frag: Fragment) -> torch.Tensor | None:
        p = self.param(frag)
        try:
            g = p._hp_mapping.get_lp_grad_fragment(p._index_in_param_group)
        except ValueError:
            return None
        g = g.detach().view(-1)
        if g.numel() == frag.param_numel and frag.numel != frag.param_numel:
            g = g.narrow(0, frag.start, frag.numel)  # a full-size accumulation buffer
        return g

    def master(self, frag: Fragment) -> torch.Tensor:
        return self.param(frag)._hp_mapping.hp_fragment.detach().view(-1)

    def optimizer_segments(self, opt_param: torch.Tensor) -> list[Segment]:
        owned = []
        for frag in self.fragments:
            hm = self.param(frag)._hp_mapping
            if hm.hp_fragment.data_ptr() and _is_view_of(hm.hp_fragment, opt_param):
                owned.append((int(hm.hp_fragment_address.start), frag))
        return _segments_with_gaps(opt_param.numel(), owned)


class Zero3Layout(Layout):
    """ZeRO stage 3: rank r owns ``[r * part, (r + 1) * part)`` of every parameter, clipped to ds_numel."""

    stage = 3

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.zero = engine.optimizer
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        super().__init__(engine.module)

    def _build_fragments(self) -> list[Fragment]:
        frags = []
        for i, (n, p) in enumerate(self.params):
            part = int(p.ds_tensor.ds_numel)
            start = self.rank * part
            numel = max(0, min(part, int(p.ds_numel) - start))
            if numel:
                frags.append(Fragment(n, i, start, numel, int(p.ds_numel)))
        return frags

    def grad(self, frag: Fragment) -> torch.Tensor | None:
        p = self.param(frag)
        g = self.zero.get_local_fp32_grad_for_param(p)
        return None if g is None else g.detach().view(-1).narrow(0, 0, frag.numel)

    def _position(self, frag: Fragment) -> tuple[int, int]:
        group_idx, offset, _ = self.zero.grad_position[self.zero.get_param_id(self.param(frag))]
        return int(group_idx), int(offset)

    def master(self, frag: Fragment) -> torch.Tensor:
        group_idx, offset = self._position(frag)
        return self.zero.fp32_partitioned_groups_flat[group_idx].detach().narrow(0, offset, frag.numel)

    def optimizer_segments(self, opt_param: torch.Tensor) -> list[Segment]:
        owned = []
        for frag in self.fragments:
            group_idx, offset = self._position(frag)
            if self.zero.fp32_partitioned_groups_flat[group_idx] is opt_param:
                owned.append((offset, frag))
        return _segments_with_gaps(opt_param.numel(), owned)


def _is_view_of(view: torch.Tensor, base: torch.Tensor) -> bool:
    start = base.data_ptr()
    end = start + base.numel() * base.element_size()
    return start <= view.data_ptr() < end


def _segments_with_gaps(total: int, owned: list[tuple[int, Fragment]]) -> list[Segment]:
    """Cover ``[0, total)``: the owned fragments in order, and plain segments between them."""
    out: list[Segment] = []
    pos = 0
    for offset, frag in sorted(owned, key=lambda t: t[0]):
        if offset > pos:
            out.append(Segment(pos, offset - pos, None))
        out.append(Segment(offset, frag.numel, frag))
        pos = offset + frag.numel
    if pos < total:
        out.append(Segment(pos, total - pos, None))
    return out


def layout_for(target: Any) -> Layout:
    """The layout of a plain module or of a DeepSpeed engine at any ZeRO stage."""
    if isinstance(target, nn.Module) and not is_deepspeed_engine(target):
        return Layout(target)
    if not is_deepspeed_engine(target):
        raise TypeError(f"expected an nn.Module or a DeepSpeed engine, got {type(target).__name__}")
    stage = target.zero_optimization_stage()
    if stage == 3:
        return Zero3Layout(target)
    params = named_trainable(target.module)
    if params and hasattr(params[0][1], "_hp_mapping"):
        return Zero12Layout(target)
    if stage == 0 and not target.fp16_enabled():
        return Layout(target.module)
    raise ValueError(
        "resources: DeepSpeed fp16 without ZeRO keeps fp32 copies ChildTuning cannot reach; "
        "use ZeRO stage 1-3, bf16 or fp32"
    )


def base_optimizer(target: Any) -> torch.optim.Optimizer:
    """The torch optimizer that performs the update (DeepSpeed's wrapped one under ZeRO)."""
    if is_deepspeed_engine(target):
        opt = target.optimizer
        inner = getattr(opt, "optimizer", None)
        return inner if isinstance(inner, torch.optim.Optimizer) else opt
    if isinstance(target, torch.optim.Optimizer):
        return target
    raise TypeError(
        f"attach: expected a torch.optim optimizer or a DeepSpeed engine, got {type(target).__name__}"
    )
