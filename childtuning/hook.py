"""``ChildTuning``: masks on the gradient or the update of each optimizer step.

Built from a model (or a DeepSpeed engine) and a :class:`ChildTuningConfig`. For D,
``compute_fisher`` scores the elements this rank owns and keeps the global top-k with an
exact distributed selection; masks are stored as bits. ``attach`` hooks a torch optimizer
or a DeepSpeed engine (ZeRO 0-3) and returns a handle whose ``remove()`` undoes it.

Where the mask acts (the official order: clip the whole gradient, then mask):
- on a torch optimizer: inside ``optimizer.step()``, after any clipping the caller did;
- on a DeepSpeed engine: inside the base optimizer's step, which DeepSpeed calls after it
  reduced, unscaled and clipped the gradients (fused into the AdamW pass, or a step pre-hook
  on the optimizer's own tensors). ``clip_order="mask-then-clip"`` masks the rank's reduced
  gradient fragments when ``engine.step()`` is called instead, before DeepSpeed's clip.
  Update-dropout masks the rank's partition of the update inside the base optimizer's step.
- ``strict_child`` (D): masked elements are put back after the step (or kept by the fused
  kernel), so weight decay moves only the child network.
The step index t that keys F and update-dropout draws is ``engine.global_steps`` under
DeepSpeed (restored with its checkpoints) and the handle's own counter otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from childtuning import fused_adamw, masks_io
from childtuning.bits import pack_bits, unpack_bits
from childtuning.config import ChildTuningConfig, compile_filter
from childtuning.draws import keep_mask, keep_threshold, step_key
from childtuning.fisher import LossFn, default_loss, fisher_scores
from childtuning.fused_adamw import BitsMask, DrawMask, SegmentBits, SegmentDraws, segment_bits, segment_draws
from childtuning.layout import Fragment, Segment, base_optimizer, is_deepspeed_engine, layout_for

log = logging.getLogger(__name__)


def full_numel(p: torch.nn.Parameter) -> int:
    return int(getattr(p, "ds_numel", p.numel()))


def full_shape(p: torch.nn.Parameter) -> list[int]:
    return list(getattr(p, "ds_shape", p.shape))


class ChildTuning:
    def __init__(self, model_or_engine: Any, config: ChildTuningConfig) -> None:
        if not isinstance(config, ChildTuningConfig):
            raise TypeError("config: expected a ChildTuningConfig")
        self.config = config
        self.target = model_or_engine
        self.layout = layout_for(model_or_engine)
        self._scalars: dict[tuple[Any, torch.dtype, torch.device], torch.Tensor] = {}  # _scalar
        self._step_keys: dict[torch.device, int] = {}  # the step each device's step key holds
        filt = config.effective_filter
        params = self.layout.params
        pattern = compile_filter(filt)
        self.eligible_params = [i for i, (n, _) in enumerate(params) if pattern.search(n)]
        if not self.eligible_params:
            names = ", ".join(n for n, _ in params[:5])
            raise ValueError(
                f"param_filter: {filt!r} matches no trainable parameter (names look like: {names}, ...); "
                "give a regular expression found in the names of the parameters to mask "
                "(or a list of them), or None for the mode's default"
            )
        eligible = set(self.eligible_params)
        self.fragments = [f for f in self.layout.fragments if f.param_index in eligible]
        # Global position of each eligible parameter's element 0: orders ties the same way everywhere.
        self.positions: dict[int, int] = {}
        pos = 0
        for i in self.eligible_params:
            self.positions[i] = pos
            pos += full_numel(params[i][1])
        self.num_elements = pos
        self.bits: dict[int, torch.Tensor] = {}  # param_index -> packed keep bits of the owned fragment
        self.summary: dict[str, Any] | None = None

    # -- D: the Fisher pass and the mask ------------------------------------------------
    def compute_fisher(
        self,
        batches: Iterable[Any],
        *,
        loss_fn: LossFn = default_loss,
        num_batches: int | None = None,
        grad_scale: float | None = None,
        loss_scale: float | None = None,
    ) -> dict[str, Any]:
        """Score, select and store this rank's D mask; returns the summary (same on every rank).

        ``grad_scale``: the factor the gradients carry when ``loss_fn`` scales the loss itself
        (torch.amp); under DeepSpeed fp16 the engine's loss scale is divided out by itself.
        ``loss_scale``: scale the loss by this here, halving it and running a batch again where
        its gradient overflows (an fp16 model; DeepSpeed fp16 starts from the engine's scale)."""
        cfg = self.config
        if cfg.mode != "childtuning-d":
            raise ValueError(f"mode: compute_fisher is for childtuning-d, not {cfg.mode!r}")
        result = fisher_scores(
            self.target,
            self.layout,
            self.fragments,
            batches,
            num_batches=num_batches or cfg.fisher_num_batches,
            clip_norm=cfg.fisher_clip_norm,
            train_mode=cfg.fisher_train_mode,
            loss_fn=loss_fn,
            grad_scale=grad_scale,
            loss_scale=loss_scale,
        )
        extra = {
            "num_fisher_batches": result.used,
            "num_fisher_batches_skipped": result.skipped,
            "num_fisher_scale_backoffs": result.backoffs,
        }
        return self.select_from_scores(result.scores, extra=extra)

    def select_from_scores(
        self, scores: list[torch.Tensor], *, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Keep the global top-k (k = round(p * N)) of per-fragment scores; store the bits.

        ``scores`` holds one non-negative float32 tensor per owned fragment (``self.fragments``),
        e.g. Fisher scores computed another way. Collective under ZeRO."""
        from childtuning.selection import select_top_k

        if len(scores) != len(self.fragments):
            raise ValueError(
                f"scores: expected one tensor per owned fragment ({len(self.fragments)}), got {len(scores)}"
            )
        k = round(self.config.reserve_p * self.num_elements)
        pairs = [
            (s, self.positions[f.param_index] + f.start) for f, s in zip(self.fragments, scores, strict=True)
        ]
        keep, sel = select_top_k(pairs, k, group=self.layout.group, distributed=self.layout.distributed)
        del pairs
        self.bits = {f.param_index: pack_bits(m) for f, m in zip(self.fragments, keep, strict=True)}
        info = {**(extra or {}), "num_tied": sel.num_tied, "num_tied_kept": sel.num_tied_kept}
        self.summary = self._summarise(keep, threshold=sel.threshold, extra=info)
        return self.summary

    def _summarise(
        self, keep: list[torch.Tensor], *, threshold: float | None, extra: dict[str, Any]
    ) -> dict[str, Any]:
        params = self.layout.params
        counts = torch.zeros(len(params), dtype=torch.float64)
        for f, m in zip(self.fragments, keep, strict=False):  # keep is empty for F/update-dropout
            counts[f.param_index] += int(m.sum())
        self.layout.all_reduce_sum(counts)
        world = torch.distributed.get_world_size() if self.layout.distributed else 1
        rank = torch.distributed.get_rank() if self.layout.distributed else 0
        mem = torch.zeros(world, dtype=torch.float64)
        mem[rank] = self.mask_bytes()
        self.layout.all_reduce_sum(mem)
        per_param = {}
        for i in self.eligible_params:
            name, p = params[i]
            numel = full_numel(p)
            per_param[name] = {
                "numel": numel,
                "kept": int(counts[i]),
                "kept_fraction": float(counts[i]) / numel,
                "shape": full_shape(p),
            }
        num_kept = int(counts.sum())
        return {
            "mode": self.config.mode,
            "reserve_p": self.config.reserve_p,
            "param_filter": self.config.effective_filter,
            "rescale": self.config.effective_rescale,
            "seed": self.config.seed,
            "num_elements": self.num_elements,
            "num_kept": num_kept,
            "kept_fraction": num_kept / self.num_elements,
            "threshold": threshold,
            "world_size": world,
            "zero_stage": self.layout.stage,
            "mask_bytes_per_rank": [int(b) for b in mem.tolist()],
            **extra,
            "params": per_param,
        }

    def mask_bytes(self) -> int:
        return sum(b.numel() for b in self.bits.values())

    # -- masks of a step ------------------------------------------------------------------
    def keep(self, frag: Fragment, step: int) -> torch.Tensor:
        """The keep bits of an owned fragment at ``step`` (D: the fixed mask)."""
        cfg = self.config
        if cfg.mode == "childtuning-d":
            return unpack_bits(self._bits_of(frag), frag.numel)
        device = self.layout.master(frag).device
        return keep_mask(cfg.seed, step, frag.param_index, frag.start, frag.numel, cfg.reserve_p, device)

    def _bits_of(self, frag: Fragment) -> torch.Tensor:
        bits = self.bits.get(frag.param_index)
        if bits is None:
            raise RuntimeError("childtuning-d has no mask yet: call compute_fisher() or load_masks() first")
        return bits

    @torch.no_grad()
    def mask_gradients_(self, step: int) -> None:
        """Mask (and rescale) this rank's gradient fragments in place, for step ``step``."""
        for frag in self.fragments:
            g = self.layout.grad(frag)
            if g is not None:
                self.mask_fragment_(g, frag, step)

    @torch.no_grad()
    def mask_fragment_(self, g: torch.Tensor, frag: Fragment, step: int) -> None:
        """Mask (and rescale) ``g``, the 1-D gradient of owned fragment ``frag``, in place."""
        compiled = self.config.fused is not False
        if self.config.mode == "childtuning-d":
            fused_adamw.kernel("mask_bits", compiled)(g, self._bits_mask(frag, g.device))
        else:
            fused_adamw.kernel("mask_draw", compiled)(g, self._draw_mask(frag, step, g.device))

    def step_key_tensor(self, step: int, device: torch.device) -> torch.Tensor:
        """The key of ``step``'s draws: one tensor on ``device`` for every fragment, written when
        the step changes (so a caller uses a step's masks before asking for the next step's)."""
        key = self._scalar("step_key", torch.int64, device)
        if self._step_keys.get(device) != step:
            key.fill_(step_key(self.config.seed, step))
            self._step_keys[device] = step
        return key

    def _draw_mask(self, frag: Fragment, step: int, device: torch.device) -> DrawMask:
        """The draw of an owned fragment at ``step``, from tensors made once and reused."""
        key = self.step_key_tensor(step, device)
        index = self._constant(frag.param_index, torch.int64, device)
        start = self._constant(frag.start, torch.int64, device)
        threshold = self._constant(keep_threshold(self.config.reserve_p), torch.int64, device)
        return DrawMask(
            key, index, start, threshold, scale=self._constant(self.config.scale, torch.float32, device)
        )

    def _bits_mask(self, frag: Fragment, device: torch.device) -> BitsMask:
        """The D mask of an owned fragment, from its first bit."""
        bits = self._bits_of(frag)
        scale = self._constant(self.config.scale, torch.float32, device)
        return BitsMask(bits, bit_offset=self._constant(0, torch.int64, device), scale=scale)

    def _scalar(
        self, name: Any, dtype: torch.dtype, device: torch.device, value: int | float = 0
    ) -> torch.Tensor:
        """A 0-d tensor of its own on ``device`` for ``name``, made once (holding ``value``).

        Each step's masks are built from such tensors, never from new ones: a CUDA tensor made
        from a Python number is copied from pageable host memory, which blocks the host until the
        GPU has finished all work queued before it. One such stall per fragment and step made
        ChildTuning-F jobs 5x slower than vanilla with 12 jobs sharing one H100 (they wait their
        turn on the GPU at every stall); ``fill_`` is an ordinary kernel launch.
        """
        slot = (name, dtype, device)
        tensor = self._scalars.get(slot)
        if tensor is None:
            tensor = self._scalars[slot] = torch.tensor(value, dtype=dtype, device=device)
        return tensor

    def segments_mask(
        self, segments: list[Segment], masked: list[bool], numel: int, step: int, device: torch.device
    ) -> SegmentBits | SegmentDraws:
        """The mask of every segment of one flat optimizer tensor (``masked[i]``: segment i is
        masked), for a one-launch kernel. A draw table holds the step key's tensor
        (:meth:`step_key_tensor`), so it serves later steps once that is written for them."""
        scale = self._constant(self.config.scale, torch.float32, device)
        if self.config.mode == "childtuning-d":
            return segment_bits(
                [
                    (seg.offset, seg.numel, self._bits_of(seg.fragment) if m and seg.fragment else None)
                    for seg, m in zip(segments, masked, strict=True)
                ],
                numel,
                scale,
            )
        rows = [
            (seg.offset, seg.numel, seg.fragment.param_index, seg.fragment.start)
            if m and seg.fragment
            else (seg.offset, seg.numel, None, 0)
            for seg, m in zip(segments, masked, strict=True)
        ]
        threshold = self._constant(keep_threshold(self.config.reserve_p), torch.int64, device)
        return segment_draws(rows, numel, self.step_key_tensor(step, device), threshold, scale)

    def _constant(self, value: int | float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A shared 0-d tensor holding ``value`` on ``device`` (never written after it is made)."""
        return self._scalar(("constant", value), dtype, device, value)

    # -- attach ---------------------------------------------------------------------------
    def attach(self, optimizer_or_engine: Any) -> ChildTuningHandle:
        if self.config.mode == "childtuning-d" and not self.bits and self.fragments:
            raise RuntimeError(
                "childtuning-d has no mask yet: call compute_fisher() or load_masks() before attach()"
            )
        return ChildTuningHandle(self, optimizer_or_engine)

    # -- persistence ------------------------------------------------------------------------
    def save_masks(self, directory: str | Path) -> Path:
        """Save the mask (D: this rank's bits) and its summary under ``directory``. Collective."""
        return masks_io.save_masks(
            Path(directory),
            mode=self.config.mode,
            fragments=self.fragments,
            bits=self.bits,
            summary=self.describe(),
            sharded=self.layout.distributed,
        )

    def load_masks(self, directory: str | Path) -> dict[str, Any]:
        """Load a saved mask (any topology) for the elements this rank owns; returns its summary."""
        bits, summary = masks_io.load_masks(
            Path(directory), mode=self.config.mode, reserve_p=self.config.reserve_p, fragments=self.fragments
        )
        if bits is not None:
            self.bits = bits
        self.summary = summary
        return summary

    def describe(self) -> dict[str, Any]:
        """The child network's summary: for D the chosen mask, for F/update-dropout the draw."""
        if self.summary is not None:
            return self.summary
        if self.config.mode == "childtuning-d":
            raise RuntimeError("childtuning-d has no mask yet: call compute_fisher() or load_masks() first")
        expected = round(self.config.reserve_p * self.num_elements)
        self.summary = self._summarise([], threshold=None, extra={"expected_kept_per_step": expected})
        self.summary["num_kept"] = None
        self.summary["kept_fraction"] = None
        return self.summary


class ChildTuningHandle:
    """Undo with :meth:`remove`. ``step`` is the index of the next step (torch optimizers)."""

    def __init__(self, ct: ChildTuning, target: Any) -> None:
        self.ct = ct
        self.cfg = ct.config
        self.engine = target if is_deepspeed_engine(target) else None
        self.optimizer = base_optimizer(target)
        self.step = 0
        self._current = 0
        self._removers: list[RemovableHandle | _Unwrap] = []
        # Each (param group, device)'s AdamW scalars, refilled in place when a step reaches it
        # with another step count than the one they hold (normally once a group a step).
        self._hyper: dict[tuple[int, torch.device], fused_adamw.AdamScalars] = {}
        self._hyper_step: dict[tuple[int, torch.device], float] = {}  # reset at each step
        # (fragment, 1-D view of the tensor the optimizer step updates, its value before the step)
        self._snapshots: list[tuple[Fragment, torch.Tensor, torch.Tensor]] = []
        self._segments: dict[int, list[Segment]] = {}
        # Per optimizer tensor of the fused step: which of its segments are masked (fixed for the
        # handle), and its one-launch table with the bits it was made from (D's change on a reload).
        self._masked: dict[int, list[bool]] = {}
        self._tables: dict[int, tuple[Any, SegmentBits | SegmentDraws]] = {}
        self.kernel_calls = 0  # compiled AdamW kernels the last fused step called
        # A flat tensor of many fragments (a ZeRO partition) in one launch over a segment table
        # (True), or a kernel per fragment (False). None: one launch on CUDA, where each launch
        # costs host time; a kernel per fragment on the CPU, where the table's per-element search
        # costs more than the launches it saves (bench/segments_step.py).
        self.one_launch: bool | None = None
        self._eligible = {f.param_index for f in ct.fragments}
        mode = self.cfg.mode
        self.fused = self._choose_fused()
        clip = float(self.engine.gradient_clipping()) if self.engine is not None else 0.0
        # Where the gradient mask acts. The official order clips the whole gradient, then the
        # optimizer masks it: inside the base optimizer's step, which DeepSpeed calls after its
        # clip (fused into the AdamW pass, or a step pre-hook on the optimizer's own tensors).
        # "mask-then-clip" masks DeepSpeed's reduced gradients before engine.step() clips them.
        self.mask_before_clip = (
            self.engine is not None
            and self.cfg.masks_gradient
            and clip > 0.0
            and self.cfg.clip_order == "mask-then-clip"
        )
        self.fuse_grad_mask = self.fused and self.cfg.masks_gradient and not self.mask_before_clip
        if mode == "vanilla" and not self.fused:
            return
        if self.engine is not None:
            self._wrap_engine_step()
            if self.cfg.masks_gradient and not self.fused and not self.mask_before_clip:
                self._removers.append(self.optimizer.register_step_pre_hook(self._mask_base_grads))
        elif not self.fused:  # the fused step replaces optimizer.step and drives the counter itself
            self._removers.append(self.optimizer.register_step_pre_hook(self._pre_torch))
            self._removers.append(self.optimizer.register_step_post_hook(self._post_torch))
        if self.fused:
            self._install_fused()
        elif mode == "update-dropout":
            self._removers.append(self.optimizer.register_step_pre_hook(self._snapshot))
            self._removers.append(self.optimizer.register_step_post_hook(self._apply_update_mask))
        if self.cfg.strict_child and not self.fuse_grad_mask:
            # the fused D kernel keeps masked elements itself; any other step is undone there
            self._removers.append(self.optimizer.register_step_pre_hook(self._snapshot))
            self._removers.append(self.optimizer.register_step_post_hook(self._restore_masked))

    def _choose_fused(self) -> bool:
        want = self.cfg.fused
        if want is False:
            return False
        reason = fused_adamw.supports(self.optimizer)
        if reason is not None:
            if want:
                raise ValueError(
                    f"fused: cannot fuse the mask into this optimizer ({reason}); set fused=None or False"
                )
            return False
        return True

    # -- step index and gradient masks ------------------------------------------------------
    def _wrap_engine_step(self) -> None:
        engine: Any = self.engine
        original = engine.step

        def step(*args: Any, **kwargs: Any) -> Any:
            if engine.is_gradient_accumulation_boundary():
                self._current = int(engine.global_steps)
                if self.mask_before_clip:
                    self.ct.mask_gradients_(self._current)
            return original(*args, **kwargs)

        engine.step = step

        def unwrap() -> None:
            if engine.__dict__.get("step") is step:
                del engine.step

        self._removers.append(_Unwrap(unwrap))

    def _pre_torch(self, *_: Any) -> None:
        self._current = self.step
        if self.cfg.masks_gradient and not self.fuse_grad_mask:
            self.ct.mask_gradients_(self._current)

    def _post_torch(self, *_: Any) -> None:
        self.step += 1

    def _segments_of(self, p: torch.Tensor) -> list[Segment]:
        segments = self._segments.get(id(p))
        if segments is None:
            segments = self._segments[id(p)] = self.ct.layout.optimizer_segments(p)
        return segments

    def _owned_views(self, p: torch.Tensor, t: torch.Tensor) -> Iterable[tuple[Fragment, torch.Tensor]]:
        """(fragment, 1-D view of ``t``) for each masked fragment inside optimizer tensor ``p``."""
        flat = t.view(-1)
        for seg in self._segments_of(p):
            frag = seg.fragment
            if frag is not None and frag.param_index in self._eligible:
                yield frag, flat.narrow(0, seg.offset, seg.numel)

    @torch.no_grad()
    def _mask_base_grads(self, *_: Any) -> None:
        """DeepSpeed, clip-then-mask: mask the gradients the base optimizer is about to use
        (already reduced, unscaled and clipped by DeepSpeed)."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    for frag, g in self._owned_views(p, p.grad):
                        self.ct.mask_fragment_(g, frag, self._current)

    # -- generic post-step masks: update-dropout (a drawn mask on the change) and the strict
    # -- child (D: masked elements keep their value); both snapshot what the step will update
    @torch.no_grad()
    def _snapshot(self, *_: Any) -> None:
        self._snapshots = [
            (frag, w, w.clone())
            for group in self.optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
            for frag, w in self._owned_views(p, p.data)
        ]

    @torch.no_grad()
    def _apply_update_mask(self, *_: Any) -> None:
        compiled = self.cfg.fused is not False
        for frag, master, before in self._snapshots:
            mask = self.ct._draw_mask(frag, self._current, master.device)
            fused_adamw.kernel("update_draw_after", compiled)(master, before, mask)
        self._snapshots = []

    @torch.no_grad()
    def _restore_masked(self, *_: Any) -> None:
        for frag, w, before in self._snapshots:
            w.copy_(torch.where(self.ct.keep(frag, 0), w, before))
        self._snapshots = []

    # -- the fused path ---------------------------------------------------------------------
    def _install_fused(self) -> None:
        opt = self.optimizer
        compiled = True

        def fused_step(closure: Any = None) -> Any:
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            if self.engine is None:
                self._pre_torch()
            self._hyper_step = {}  # a new step: lr and the counts may have changed
            self.kernel_calls = 0
            with torch.no_grad():
                for group in opt.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            self._fused_param(group, p, compiled)
            if self.engine is None:
                self._post_torch()
            return loss

        opt.step = fused_step  # type: ignore[method-assign]

        def unwrap() -> None:
            if opt.__dict__.get("step") is fused_step:
                del opt.step

        self._removers.append(_Unwrap(unwrap))

    def _fused_param(self, group: dict[str, Any], p: torch.Tensor, compiled: bool) -> None:
        state = fused_adamw.next_step_state(self.optimizer, p)
        slot, count = (id(group), p.device), float(state["step"])
        hyper = self._hyper.get(slot)
        if hyper is None or self._hyper_step.get(slot) != count:
            hyper = self._hyper[slot] = fused_adamw.scalars(group, count, p.device, hyper)
            self._hyper_step[slot] = count
        assert p.grad is not None
        flat = (p.data.view(-1), p.grad.view(-1), state["exp_avg"].view(-1), state["exp_avg_sq"].view(-1))
        cfg, step = self.cfg, self._current
        if cfg.mode == "childtuning-d":
            name = "grad_bits_strict" if cfg.strict_child else "grad_bits"
        else:
            name = "grad_draw" if cfg.mode == "childtuning-f" else "update_draw"
        segments = self._segments_of(p)
        masked = self._masked_segments(p, segments)
        one_launch = self.one_launch if self.one_launch is not None else p.device.type == "cuda"
        if not any(masked):  # one plain launch for the whole tensor
            self.kernel_calls += 1
            fused_adamw.kernel("plain", compiled)(*flat, hyper)
        elif len(segments) > 1 and one_launch:  # a flat partition of many fragments: its table
            self.kernel_calls += 1
            fused_adamw.kernel(f"segments_{name}", compiled)(*flat, hyper, self._table(p, segments, masked))
        else:
            for seg, is_masked in zip(segments, masked, strict=True):
                self.kernel_calls += 1
                views = [t.narrow(0, seg.offset, seg.numel) for t in flat]
                frag = seg.fragment
                if not is_masked or frag is None:
                    fused_adamw.kernel("plain", compiled)(*views, hyper)
                elif cfg.mode == "childtuning-d":
                    fused_adamw.kernel(name, compiled)(*views, hyper, self.ct._bits_mask(frag, p.device))
                else:
                    fused_adamw.kernel(name, compiled)(
                        *views, hyper, self.ct._draw_mask(frag, step, p.device)
                    )

    def _masked_segments(self, p: torch.Tensor, segments: list[Segment]) -> list[bool]:
        """Which segments of optimizer tensor ``p`` the fused kernel masks (made once)."""
        masked = self._masked.get(id(p))
        if masked is None:
            cfg = self.cfg
            masks_here = cfg.mode != "vanilla" and not (cfg.masks_gradient and not self.fuse_grad_mask)
            masked = self._masked[id(p)] = [
                masks_here and seg.fragment is not None and seg.fragment.param_index in self._eligible
                for seg in segments
            ]
        return masked

    def _table(
        self, p: torch.Tensor, segments: list[Segment], masked: list[bool]
    ) -> SegmentBits | SegmentDraws:
        """``p``'s one-launch mask: made once (again when D's bits were replaced); a draw table's
        step key is written for this step."""
        cached = self._tables.get(id(p))
        if cached is None or cached[0] is not self.ct.bits:
            mask = self.ct.segments_mask(segments, masked, p.numel(), self._current, p.device)
            cached = self._tables[id(p)] = (self.ct.bits, mask)
        elif isinstance(cached[1], SegmentDraws):
            self.ct.step_key_tensor(self._current, p.device)
        return cached[1]

    def remove(self) -> None:
        for r in reversed(self._removers):
            r.remove()
        self._removers = []

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


class _Unwrap:
    """Undoes one wrapped method when removed, like ``torch.utils.hooks.RemovableHandle``.

    ``remove()`` calls ``undo`` once; later calls do nothing."""

    def __init__(self, undo: Callable[[], None]) -> None:
        self._undo: Callable[[], None] | None = undo

    def remove(self) -> None:
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()

    def __repr__(self) -> str:
        if self._undo is None:
            return "<_Unwrap removed>"
        return f"<_Unwrap {getattr(self._undo, '__qualname__', self._undo)!s}>"
