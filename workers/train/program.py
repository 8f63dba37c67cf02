"""The training program of one job, one process per rank: ``python -m workers.train --job-dir DIR``.

It reads ``DIR/job.json`` (the job contract), then: prepare (data, model, DeepSpeed engine),
the Fisher pass for ChildTuning-D (or the saved masks), train with evaluation and
checkpoints, export ``model/`` (``best/`` is exported whenever an evaluation beats the best).
Started again on a directory with a checkpoint, it resumes from the latest one. The files,
records and exit codes are described in ``docs/job-directory.md``.

Every rank runs the same code; rank 0 alone writes records and ``status.json``. Decisions
that end the loop (a stop signal, a non-finite loss) are taken from all-reduced values, so
every rank takes them at the same step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from service.core import env
from service.core.contract import JobSpec, SpecError, load_spec
from service.core.jobdir import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    DELTA_DIR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    JOB_FILE,
    MASKS_DIR,
    MODEL_DIR,
    PREDICTIONS_FILE,
    atomic_write_text,
    read_status,
    write_status,
)
from service.core.procs import rendezvous_port

if TYPE_CHECKING:
    import torch

    from childtuning import ChildTuning, ChildTuningHandle
    from workers.train.data import DatasetInfo, SftDataset, Splits, TokenizedDataset
    from workers.train.sinks import Recorder

# What other modules import from here; exit codes and status.json I/O come from service.core.jobdir.
__all__ = ["JobError", "Plan", "Run", "main", "optimizer_groups", "step_seed"]

log = logging.getLogger("childtune.train")

FISHER_EPOCH = -1  # the Fisher pass reads its own shuffle of the training set
FILES_ENV = env.FILES_DIR


class JobError(Exception):
    """The job cannot go on; the message is the job's error, written for its owner."""


class Interrupted(Exception):
    """A stop signal reached every rank; the job ends without writing anything half-done."""


# ---------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------


def files_dir(job_dir: Path) -> Path | None:
    """Where uploaded dataset files live: ``$CHILDTUNE_FILES_DIR``, else ``<artifacts>/files``."""
    env = os.environ.get(FILES_ENV)
    if env:
        return Path(env)
    candidate = job_dir.parent.parent / "files"
    return candidate if candidate.is_dir() else None


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of a step's dropout on a rank: a resumed run draws what the uninterrupted one drew."""
    digest = hashlib.blake2b(f"childtune/dropout/{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


# Biases and norms are not decayed (BERT's LayerNorm, Llama's RMSNorm, GPT-2's ln_1/ln_2/ln_f).
NO_DECAY: tuple[str, ...] = (
    "bias",
    "LayerNorm.weight",
    "layernorm.weight",
    "norm.weight",
    ".ln_1.weight",
    ".ln_2.weight",
    ".ln_f.weight",
)


def optimizer_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's parameter groups: decay on weights, none on biases and norms (:data:`NO_DECAY`)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not n.endswith(NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in params if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


@dataclass(frozen=True, slots=True)
class Plan:
    """How the job's examples become optimizer steps."""

    world_size: int
    micro_per_rank: int  # examples per rank per forward/backward
    grad_accum: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @classmethod
    def make(cls, spec: JobSpec, num_train: int, world_size: int) -> Plan:
        hp = spec.hyperparameters
        per_step = hp.batch_size * hp.gradient_accumulation_steps
        steps_per_epoch = (num_train // hp.batch_size) // hp.gradient_accumulation_steps
        if steps_per_epoch < 1:
            raise JobError(
                f"hyperparameters.batch_size: the training set has {num_train} examples, fewer than one "
                f"optimizer step takes (batch_size {hp.batch_size} x gradient_accumulation_steps "
                f"{hp.gradient_accumulation_steps} = {per_step}); lower them or give more data"
            )
        total = hp.max_steps if hp.max_steps is not None else hp.epochs * steps_per_epoch
        return cls(
            world_size=world_size,
            micro_per_rank=hp.batch_size // world_size,
            grad_accum=hp.gradient_accumulation_steps,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            warmup_steps=math.ceil(hp.warmup_ratio * total),
        )


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


class Run:
    """One rank's part of one job, read top to bottom as a recipe.

    :meth:`execute` runs :meth:`setup` (device, data, process group, model, datasets, DeepSpeed
    engine, resume, ChildTuning), then :meth:`train` (after each step :meth:`should_evaluate` and
    :meth:`should_save` say what follows it), then :meth:`finish` (the ``model/`` export).
    Every attribute is declared in ``__init__``; those known only after a setup step are None
    (or empty) until that step fills them.
    """

    def __init__(self, job_dir: Path, spec: JobSpec, rank: int, world_size: int) -> None:
        # The job and this rank's place in it.
        self.job_dir = job_dir
        self.spec = spec
        self.rank = rank
        self.world_size = world_size
        self.is_main = rank == 0
        self.ckpt_dir = job_dir / CHECKPOINTS_DIR
        # Progress: what status.json, the records and the checkpoints say.
        self.stop_signal: int | None = None
        self.phase = "preparing"
        self.step = 0
        self.best: dict[str, Any] | None = None
        # The final model's dev score (what the paper reports), set by the last evaluation.
        self.final: dict[str, Any] | None = None
        # Evaluations in a row without a new best (early stopping), kept in checkpoints.
        self.evals_without_improvement = 0
        self.last_eval: dict[str, Any] = {}  # {"step": ..., eval metrics} of the latest evaluation
        self.resumed_from: int | None = None  # the checkpoint's step, when _resume found one
        self.recorder: Recorder | None = None  # rank 0 only, from execute()
        self._status_at = 0.0
        # Filled by setup(), each by the step named.
        self.device_kind: str | None = None  # _setup_device: "cpu" or "cuda"
        self.info: DatasetInfo | None = None  # _setup_data
        self.plan: Plan | None = None  # _setup_data
        self.distributed = False  # _setup_distributed: a process group is up
        self.torch_device: torch.device | None = None  # _setup_distributed: where batches go
        self.reduce_device: torch.device | None = None  # _setup_distributed: where all-reduces run
        self.model_path: str | None = None  # _setup_model
        self.tokenizer: Any = None  # _setup_model
        self.hf_model: Any = None  # _setup_model: the Hugging Face model the engine wraps
        # _setup_datasets: token ids (SftDataset, with loss labels, for causal-lm)
        self.train_set: TokenizedDataset | SftDataset | None = None
        self.eval_set: TokenizedDataset | SftDataset | None = None
        self.answer_tokens = 0  # _setup_datasets, causal-lm: the longest evaluation answer, in tokens
        self.engine: Any = None  # _setup_engine: the DeepSpeed engine
        self.optimizer: Any = None  # _setup_engine
        self.scheduler: Any = None  # _setup_engine
        self.ct: ChildTuning | None = None  # _setup_childtuning
        self.handle: ChildTuningHandle | None = None  # _setup_childtuning: the attached hook

    # -- main ---------------------------------------------------------------------------------
    def execute(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if self.is_main:
            from workers.train.sinks import Recorder

            self.recorder = Recorder.for_job(self.job_dir, self.spec)
        try:
            self.status("running", force=True)
            self.set_phase("preparing")
            self.setup()
            self.train()
            self.finish()
            self.event("finished", status="succeeded", step=self.step, error=None)
            self.status("succeeded", force=True)
            return EXIT_OK
        except Interrupted:
            self.event("finished", status="interrupted", step=self.step, error=None)
            self.status("interrupted", force=True)
            return EXIT_INTERRUPTED
        except Exception as exc:
            known = isinstance(exc, JobError | ValueError)
            message = str(exc) if known else f"{type(exc).__name__}: {exc}"
            if not known:
                log.error("rank %d failed:\n%s", self.rank, traceback.format_exc())
            else:
                log.error("rank %d: %s", self.rank, message)
            # During training the error belongs to the step in progress.
            at = self.step + 1 if self.phase == "training" else None
            self.event("error", message=message, step=at)
            self.event("finished", status="failed", step=self.step, error=message)
            try:
                self.status("failed", force=True, error=message)
            except OSError as write_error:  # a full disk: the supervisor reports what it can
                log.error("rank %d: cannot record the failure: %s", self.rank, write_error)
            return EXIT_FAILED
        finally:
            if self.recorder is not None:
                self.recorder.close()
            self.close_process_group()

    # -- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        """Everything before the first step, in this order."""
        self._setup_device()
        splits = self._setup_data()  # data first: a bad row fails the job before anything heavy
        self._setup_distributed()
        self._setup_model()
        self._setup_datasets(splits)
        self._setup_engine()
        checkpoint = self._resume()
        self._announce(checkpoint)
        self._setup_childtuning()

    def _setup_device(self) -> None:
        """Resolve ``resources.device``; on CPU, tell DeepSpeed (before its import) and refuse fp16/bf16."""
        res = self.spec.resources
        device = _resolve_device(res.device)
        if device == "cpu" and res.precision != "fp32":
            raise JobError(
                f"resources.precision: {res.precision} needs a GPU; this job runs on CPU, use fp32"
            )
        if device == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        self.device_kind = device

    def _setup_data(self) -> Splits:
        """Read and check the dataset's rows, and plan the optimizer steps."""
        from workers.train.data import load_splits

        splits = load_splits(self.spec.dataset, files_dir=files_dir(self.job_dir))
        self.info = splits.info
        self.plan = Plan.make(self.spec, len(splits.train), self.world_size)
        return splits

    def _setup_distributed(self) -> None:
        """Threads per rank, the process group (gloo on CPU, NCCL on CUDA) and this rank's device."""
        import torch

        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        # The launcher gives each CPU rank its share of the job's thread budget (launch.cpu_threads);
        # without it (another launcher), the machine's cores are split over this host's ranks.
        raw = os.environ.get(env.CPU_THREADS, "").strip()
        threads = int(raw) if raw.isdigit() and int(raw) > 0 else (os.cpu_count() or 1) // max(1, local_world)
        torch.set_num_threads(max(1, threads))
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo" if self.device_kind == "cpu" else "nccl")
        self.distributed = torch.distributed.is_initialized()
        if self.device_kind == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            self.torch_device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.torch_device = torch.device("cpu")
        self.reduce_device = self.torch_device

    def _setup_model(self) -> None:
        """Load the model and its tokenizer; the new classifier head is the same on every rank."""
        import torch

        from workers.train.model_io import load_model, resolve_model

        assert self.info is not None
        self.model_path = resolve_model(self.spec.model)
        torch.manual_seed(self.spec.hyperparameters.seed)
        self.tokenizer, self.hf_model = load_model(self.model_path, self.info)

    def _setup_datasets(self, splits: Splits) -> None:
        """Tokenize the training and evaluation splits (causal-lm: render, label, apply ``overlong``)."""
        from workers.train.data import tokenize

        max_len, task_type = self.spec.hyperparameters.max_seq_length, splits.info.task_type
        if splits.info.is_causal_lm:
            self._setup_sft_datasets(splits)
            return
        self.train_set = tokenize(splits.train, self.tokenizer, max_len, task_type=task_type)  # type: ignore[arg-type]
        self.eval_set = tokenize(splits.eval, self.tokenizer, max_len, task_type=task_type)  # type: ignore[arg-type]

    def _setup_sft_datasets(self, splits: Splits) -> None:
        from workers.train.data import encode_sft
        from workers.train.data.sft import uses_chat_template

        data, max_len = self.spec.dataset, self.spec.hyperparameters.max_seq_length
        overlong = data.overlong or "truncate"
        sources = {
            "train": data.train_file or data.preset or "train",
            "eval": data.eval_file or data.preset or "eval",
        }
        counts: dict[str, Any] = {}
        for split, rows in (("train", splits.train), ("eval", splits.eval)):
            encoded, counted = encode_sft(
                rows,  # type: ignore[arg-type]
                self.tokenizer,
                max_len,
                overlong=overlong,
                chat_template=data.chat_template,
                source=str(sources[split]),
            )
            counts[split] = counted.to_dict()
            if split == "train":
                self.train_set = encoded
            else:
                self.eval_set = encoded
        assert self.plan is not None and self.eval_set is not None
        answers = self.tokenizer(list(self.eval_set.references[:4096]), add_special_tokens=False)["input_ids"]  # type: ignore[union-attr]
        self.answer_tokens = max((len(a) for a in answers), default=1)
        # Rows left out change the number of steps: plan them on what is kept.
        self.plan = Plan.make(self.spec, len(self.train_set), self.world_size)  # type: ignore[arg-type]
        self.event(
            "data",
            overlong=overlong,
            chat_template=uses_chat_template(self.tokenizer, data.chat_template),
            max_seq_length=max_len,
            **counts,
        )

    def _setup_engine(self) -> None:
        """The DeepSpeed engine: AdamW (no decay on biases and norms), warmup-then-decay LR, ZeRO."""
        import deepspeed
        import torch

        hp, res, plan = self.spec.hyperparameters, self.spec.resources, self.plan
        assert plan is not None
        model = self.hf_model
        groups = optimizer_groups(model, hp.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate)

        def schedule(step: int) -> float:  # linear warmup, then linear decay to 0
            if step < plan.warmup_steps:
                return step / max(1, plan.warmup_steps)
            return max(0.0, (plan.total_steps - step) / max(1, plan.total_steps - plan.warmup_steps))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        config = {
            "train_micro_batch_size_per_gpu": plan.micro_per_rank,
            "gradient_accumulation_steps": plan.grad_accum,
            "train_batch_size": plan.micro_per_rank * plan.grad_accum * self.world_size,
            "zero_optimization": {"stage": res.zero_stage},
            "gradient_clipping": hp.max_grad_norm,
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
            "bf16": {"enabled": res.precision == "bf16"},
            "fp16": {"enabled": res.precision == "fp16", "initial_scale_power": 16},
        }
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )

    def _resume(self) -> str | None:
        """Load the latest complete checkpoint, if any (incomplete ones are removed first).

        Returns its folder's name, or None when the job starts afresh.
        """
        from workers.train import checkpoints

        if self.is_main:
            removed = checkpoints.remove_incomplete(self.ckpt_dir)
            if removed:
                log.warning("removed incomplete checkpoints: %s", ", ".join(removed))
        self.barrier()
        found = checkpoints.latest(self.ckpt_dir)
        if found is None:
            return None
        step, path, state = found
        checkpoints.load(self.engine, self.ckpt_dir, step)
        self.step = step
        self.best = state.get("best")
        self.evals_without_improvement = int(state.get("evals_without_improvement") or 0)
        self.resumed_from = step
        return path.name

    def _announce(self, checkpoint: str | None) -> None:
        """The ``started`` event, and ``resumed`` when :meth:`_resume` loaded ``checkpoint``."""
        import torch

        res, plan = self.spec.resources, self.plan
        assert plan is not None and self.train_set is not None and self.eval_set is not None
        self.event(
            "started",
            world_size=self.world_size,
            zero_stage=res.zero_stage,
            precision=res.precision,
            device=self.device_kind,
            cpu_threads=torch.get_num_threads(),
            gpu=torch.cuda.get_device_name(self.torch_device) if self.device_kind == "cuda" else None,
            total_steps=plan.total_steps,
            steps_per_epoch=plan.steps_per_epoch,
            num_train_examples=len(self.train_set),
            num_eval_examples=len(self.eval_set),
            resumed_from=self.resumed_from,
        )
        if checkpoint is not None:
            self.event("resumed", from_step=self.resumed_from, checkpoint=checkpoint)

    def _setup_childtuning(self) -> None:
        """ChildTuning's masks (ChildTuning-D: the saved ones, else the Fisher pass), then its hook."""
        from childtuning import ChildTuning, ChildTuningConfig
        from childtuning.masks_io import SUMMARY

        try:
            cfg = ChildTuningConfig(**self.spec.childtuning.config_kwargs(self.spec.hyperparameters.seed))
            self.ct = ChildTuning(self.engine, cfg)
        except ValueError as exc:  # e.g. a param_filter that selects no parameter of this model
            raise JobError(f"childtuning.{exc}") from None
        masks = self.job_dir / MASKS_DIR
        if cfg.mode == "childtuning-d":
            if (masks / SUMMARY).is_file():
                summary = self.ct.load_masks(masks)
            elif self.resumed_from is not None:
                raise JobError(
                    f"masks: the job resumes from step {self.resumed_from} but {masks} holds no D mask; "
                    "the mask must be the one training started with (start the job afresh)"
                )
            else:
                self.set_phase("fisher")
                if self.info is not None and self.info.is_causal_lm:
                    summary = self.ct.compute_fisher(self.fisher_batches(), loss_fn=self.causal_lm_loss)
                else:
                    summary = self.ct.compute_fisher(self.fisher_batches())
                self.ct.save_masks(masks)
            self.event("fisher", **{k: v for k, v in summary.items() if k != "params"})
        else:
            self.ct.save_masks(masks)  # the summary of the draw
        self.handle = self.ct.attach(self.engine)

    def fisher_batches(self) -> Iterator[dict[str, Any]]:
        from workers.train.data import shard_indices

        hp, plan = self.spec.hyperparameters, self.plan
        assert plan is not None and self.train_set is not None
        order = shard_indices(
            len(self.train_set), FISHER_EPOCH, hp.seed, self.rank, self.world_size, hp.batch_size
        )
        per = plan.micro_per_rank
        total = len(order) // per
        if self.spec.childtuning.fisher_num_batches is not None:
            total = min(total, self.spec.childtuning.fisher_num_batches)
        shown = 0.0
        for i in range(total):
            self.check_stop()
            yield self.to_device(self.train_set.batch(order[i * per : (i + 1) * per]))
            now = time.monotonic()
            if now - shown > 0.5 or i + 1 == total:
                shown = now
                self.event("progress", phase="fisher", done=i + 1, total=total)

    # -- train ------------------------------------------------------------------------------------
    def train(self) -> None:
        import torch

        from workers.train.data import shard_indices

        hp, plan = self.spec.hyperparameters, self.plan
        assert plan is not None and self.train_set is not None
        if hp.eval_at_start and self.resumed_from is None:
            self.evaluate(0, last=False, at_start=True)  # the base model's score, for reference
        self.set_phase("training")
        self.engine.train()
        epoch_cache: dict[int, list[int]] = {}
        per, gas = plan.micro_per_rank, plan.grad_accum
        while self.step < plan.total_steps:
            self.check_stop()
            step = self.step + 1
            epoch, in_epoch = divmod(step - 1, plan.steps_per_epoch)
            if epoch not in epoch_cache:
                epoch_cache.clear()
                epoch_cache[epoch] = shard_indices(
                    len(self.train_set), epoch, hp.seed, self.rank, self.world_size, hp.batch_size
                )
            order = epoch_cache[epoch]
            torch.manual_seed(step_seed(hp.seed, self.rank, step))
            lr = float(self.optimizer.param_groups[0]["lr"])
            started = time.perf_counter()
            totals = torch.zeros(2, dtype=torch.float64, device=self.reduce_device)  # loss sum, tokens
            for micro in range(gas):
                first = (in_epoch * gas + micro) * per
                batch = self.to_device(self.train_set.batch(order[first : first + per]))
                loss = self.loss(batch)
                self.engine.backward(loss)
                self.engine.step()
                totals[0] += loss.detach().double()
                totals[1] += batch["attention_mask"].sum()
            if self.distributed:
                torch.distributed.all_reduce(totals)
            # .item() waits for the device: the step's time includes its kernels.
            mean_loss = totals[0].item() / (gas * self.world_size)
            elapsed = time.perf_counter() - started
            if not math.isfinite(mean_loss):
                raise JobError(
                    f"non-finite loss ({mean_loss}) at step {step}: training diverged; lower "
                    "hyperparameters.learning_rate or set hyperparameters.max_grad_norm"
                )
            self.step = step
            grad_norm = self.engine.get_global_grad_norm()
            if self.recorder is not None:
                self.recorder.metric(
                    "train",
                    step,
                    total_steps=plan.total_steps,
                    epoch=step / plan.steps_per_epoch,
                    loss=mean_loss,
                    lr=lr,
                    grad_norm=None if grad_norm is None else float(grad_norm),
                    samples_per_second=hp.batch_size * gas / elapsed,
                    tokens_per_second=totals[1].item() / elapsed,
                    **self.device_memory(),
                )
            self.status("running")
            last = step == plan.total_steps
            stopping = False
            if self.should_evaluate(step):
                stopping = self.evaluate(step, last=last)
            if self.should_save(step) or stopping:
                self.save_checkpoint(step, last=last or stopping)
            if stopping:
                break

    def should_evaluate(self, step: int) -> bool:
        """Evaluate after ``step``: every ``eval_every`` steps when set, at every epoch's end, and
        after the last step (always)."""
        plan = self.plan
        assert plan is not None
        every = self.spec.hyperparameters.eval_every
        on_schedule = every is not None and step % every == 0
        return on_schedule or step % plan.steps_per_epoch == 0 or step == plan.total_steps

    def should_save(self, step: int) -> bool:
        """Checkpoint after ``step``: every ``save_every`` steps when set, else at every epoch's
        end; and after the last step (always: every job leaves a checkpoint of its end)."""
        plan = self.plan
        assert plan is not None
        every = self.spec.hyperparameters.save_every
        on_schedule = step % every == 0 if every is not None else step % plan.steps_per_epoch == 0
        return on_schedule or step == plan.total_steps

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.torch_device, non_blocking=True) for k, v in batch.items()}

    def loss(self, batch: dict[str, Any]) -> Any:
        from workers.train.losses import model_loss, rdrop_loss

        assert self.info is not None
        if self.info.is_causal_lm:
            return self.causal_lm_loss(self.engine, batch)
        alpha = self.spec.hyperparameters.rdrop_alpha
        if alpha > 0:
            return rdrop_loss(self.engine, batch, alpha, regression=self.info.is_regression)[0]
        return model_loss(self.engine, batch)[0]

    def causal_lm_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """The causal-lm loss of a micro-batch: the mean over the GLOBAL micro-batch's completion
        tokens (their count is all-reduced), so the gradient is the same at any number of ranks.
        Collective."""
        import torch

        from workers.train.data import IGNORE_INDEX
        from workers.train.losses import causal_lm_loss

        count = (batch["labels"][:, 1:] != IGNORE_INDEX).sum().to(torch.float64).reshape(1)
        if self.distributed:
            torch.distributed.all_reduce(count)
        return causal_lm_loss(model, batch, max(1.0, count.item()) / self.world_size)

    def device_memory(self) -> dict[str, float]:
        """Rank 0's peak GPU memory so far (MiB), on CUDA; nothing on CPU."""
        if self.torch_device is None or self.torch_device.type != "cuda":
            return {}
        import torch

        return {"gpu_peak_memory_mib": torch.cuda.max_memory_allocated(self.torch_device) / 2**20}

    def save_checkpoint(self, step: int, *, last: bool = False) -> None:
        from workers.train import checkpoints

        self.set_phase("saving")
        keep = self.spec.hyperparameters.keep_checkpoints
        state = {"best": self.best, "evals_without_improvement": self.evals_without_improvement}
        path = checkpoints.save(self.engine, self.ckpt_dir, step, state, keep)
        self.event("checkpoint", name=path.name, step=step, path=str(path))
        if not last:  # after the last step the job goes on saving (the model export)
            self.set_phase("training")

    # -- evaluate ---------------------------------------------------------------------------------
    def evaluate(self, step: int, *, last: bool, at_start: bool = False) -> bool:
        """Evaluate on the dev set (collective); True when early stopping ends training here,
        which makes this evaluation the final one.

        ``at_start`` (``eval_at_start``, step 0, before any update): a reference record only;
        it is never best or final, exports nothing and does not count for early stopping."""
        from workers.train.glue_metrics import higher_is_better

        assert self.plan is not None and self.info is not None and self.eval_set is not None
        self.set_phase("evaluating")
        self.engine.eval()
        if self.info.is_causal_lm:
            record, predictions = self._causal_lm_scores(step)
        else:
            record, predictions = self._classifier_scores()
        main_key = f"eval_{self.info.main_metric}"
        value = record[main_key]
        better = (lambda a, b: a > b) if higher_is_better(self.info.main_metric) else (lambda a, b: a < b)
        patience = self.spec.hyperparameters.early_stopping_patience
        if at_start:
            is_best = stopping = last = False
        else:
            is_best = self.best is None or better(value, self.best["main_value"])
            self.evals_without_improvement = 0 if is_best else self.evals_without_improvement + 1
            stopping = not last and patience is not None and self.evals_without_improvement >= patience
            last = last or stopping
        if self.recorder is not None:
            self.recorder.metric(
                "eval",
                step,
                total_steps=self.plan.total_steps,
                epoch=step / self.plan.steps_per_epoch,
                **record,
                main_metric=main_key,
                main_value=value,
                is_best=is_best,
                is_final=last,
                **({"at_start": True} if at_start else {}),
            )
        if at_start:
            self.engine.train()
            return False
        if last and self.is_main and predictions is not None:
            atomic_write_text(
                self.job_dir / PREDICTIONS_FILE, json.dumps({"step": step, "predictions": predictions})
            )
        self.last_eval = {"step": step, **record}
        if last:
            self.final = {"step": step, "main_metric": main_key, "main_value": value, "metrics": record}
        if is_best:
            self.best = {"step": step, "main_metric": main_key, "main_value": value, "metrics": record}
            self.export(BEST_DIR, step, record)
            self.event("best", step=step, main_metric=main_key, main_value=value)
        if stopping:
            assert self.best is not None
            self.event(
                "early_stopped",
                step=step,
                patience=patience,
                best_step=self.best["step"],
                main_metric=main_key,
                best_value=self.best["main_value"],
            )
        self.engine.train()
        if not last:  # after the final evaluation comes saving, not more training
            self.set_phase("training")
        return stopping

    def _classifier_scores(self) -> tuple[dict[str, Any], list[Any]]:
        """The dev metrics of a classifier or regressor, and its predictions. Collective."""
        import numpy as np
        import torch

        from workers.train.glue_metrics import compute_metrics

        assert self.plan is not None and self.info is not None and self.eval_set is not None
        n = len(self.eval_set)
        outputs: list[Any] = []
        loss_sum = 0.0
        with torch.no_grad():
            for idx in self.eval_chunks(max(32, self.plan.micro_per_rank * 2)):
                batch = self.to_device(self.eval_set.batch(idx or [0]))
                out = self.engine(**batch)
                if idx:
                    outputs.append(out.logits.float().cpu())
                    loss_sum += float(out.loss) * len(idx)
        logits = torch.cat(outputs) if outputs else torch.zeros(0, self.info.num_labels)
        gathered = self.gather_objects((logits.numpy(), loss_sum))
        all_logits = np.concatenate([g[0] for g in gathered])
        labels = self.eval_set.labels.numpy()
        predictions = all_logits[:, 0] if self.info.is_regression else all_logits
        scores = compute_metrics(self.info.metric, predictions, labels)
        record: dict[str, Any] = {"eval_loss": sum(g[1] for g in gathered) / max(1, n)}
        record.update({f"eval_{k}": v for k, v in scores.items()})
        return record, predictions.tolist()

    def _causal_lm_scores(self, step: int) -> tuple[dict[str, Any], list[str] | None]:
        """Causal-lm dev metrics: loss, perplexity and token accuracy over every completion token;
        greedy answers to the first ``eval_samples`` prompts (the ``samples`` event); with metric
        exact_match, every row's greedy answer against its completion. Collective."""
        import torch

        from workers.train.data import SftDataset
        from workers.train.glue_metrics import exact_match
        from workers.train.losses import token_sums

        assert self.plan is not None and self.info is not None and isinstance(self.eval_set, SftDataset)
        hp, data = self.spec.hyperparameters, self.eval_set
        n = len(data)
        sums = torch.zeros(3, dtype=torch.float64, device=self.reduce_device)  # loss, tokens, correct
        with torch.no_grad():
            for idx in self.eval_chunks(max(4, self.plan.micro_per_rank * 2)):
                batch = self.to_device(data.batch(idx or [0]))
                out = self.engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                if idx:
                    ce, count, correct = token_sums(out.logits, batch["labels"])
                    sums += torch.stack([ce.double(), count.double(), correct.double()]).to(sums.device)
        if self.distributed:
            torch.distributed.all_reduce(sums)
        loss_sum, tokens, right = (float(x) for x in sums.tolist())
        mean = loss_sum / max(1.0, tokens)
        record: dict[str, Any] = {
            "eval_loss": mean,
            "eval_perplexity": math.exp(min(mean, 700.0)),
            "eval_token_accuracy": right / max(1.0, tokens),
            "eval_tokens": int(tokens),
        }
        shown = list(range(min(hp.eval_samples, n)))
        if shown:  # every rank generates them (ZeRO-3 needs all ranks in each forward)
            answers = self.generate(shown, hp.max_new_tokens)
            self.event(
                "samples",
                step=step,
                samples=[
                    {
                        "prompt": data.questions[i][-500:],
                        "reference": data.references[i][:500],
                        "answer": a[:500],
                    }
                    for i, a in zip(shown, answers, strict=True)
                ],
            )
        if self.info.metric != "exact_match":
            return record, None
        mine_answers: list[str] = []
        max_new = min(hp.max_new_tokens, self.answer_tokens + 4)
        for idx in self.eval_chunks(16):
            mine_answers += self.generate(idx or [0], max_new)[: len(idx)]
        answers = [a for part in self.gather_objects(mine_answers) for a in part]
        record["eval_exact_match"] = exact_match(answers, data.references)
        return record, answers

    def eval_chunks(self, size: int) -> Iterator[list[int]]:
        """This rank's evaluation rows (``eval_shard``) in chunks of ``size``, as many chunks on
        every rank (ZeRO-3 gathers parameters in each forward): a rank out of rows gets ``[]``
        and runs a forward on row 0 whose output it drops."""
        from workers.train.data import eval_shard

        assert self.eval_set is not None
        n = len(self.eval_set)
        mine = eval_shard(n, self.rank, self.world_size)
        for r in range(math.ceil(math.ceil(n / self.world_size) / size)):
            yield list(mine[r * size : (r + 1) * size])

    def gather_objects(self, part: Any) -> list[Any]:
        """Every rank's ``part``, in rank order. Collective."""
        if not self.distributed:
            return [part]
        import torch

        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, part)
        return gathered

    def generate(self, indices: list[int], max_new_tokens: int) -> list[str]:
        """Greedy answers to the prompts of evaluation rows ``indices`` (text after the prompt).
        Collective under ZeRO-3 (``synced_gpus``: every rank runs forwards until all are done)."""
        import torch

        from workers.train.data import SftDataset

        assert isinstance(self.eval_set, SftDataset)
        batch = self.to_device(self.eval_set.generation_batch(indices))
        synced = self.distributed and self.engine.zero_optimization_stage() == 3
        with torch.no_grad():
            out = self.engine.module.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                synced_gpus=synced,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[:, batch["input_ids"].shape[1] :].cpu()
        return [str(t) for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    # -- export -----------------------------------------------------------------------------------
    def export(self, which: str, step: int, metrics: dict[str, Any]) -> None:
        from workers.train.model_io import export_model, full_state_dict, job_card

        state = full_state_dict(self.engine)  # collective under ZeRO-3
        if self.is_main:
            assert state is not None and self.plan is not None and self.info is not None
            card = job_card(
                self.spec,
                self.job_dir,
                self.info,
                which=which,
                step=step,
                total_steps=self.plan.total_steps,
                metrics=metrics,
                **({"final": self.final} if which == MODEL_DIR else {}),
            )
            path = export_model(self.job_dir / which, self.hf_model, state, self.tokenizer, card)
            self.event("model", which=which, path=str(path), step=step)
        self.barrier()

    def finish(self) -> None:
        assert self.handle is not None
        self.set_phase("saving")
        self.export(MODEL_DIR, self.step, self.last_eval)
        if self.is_main and self.spec.childtuning.mode == "childtuning-d":
            self.audit_child()
        self.handle.remove()

    def audit_child(self) -> None:
        """ChildTuning-D, rank 0: compare the exported model with the base (``masks/audit.json``);
        fail under ``audit_strict`` when an element outside the child moved; for a strict child,
        export ``delta/``, the child as a sparse change of the base."""
        from childtuning import load_full_mask
        from childtuning.delta import AUDIT, audit, load_weights, write_delta

        assert self.model_path is not None
        ct_spec = self.spec.childtuning
        masks = load_full_mask(self.job_dir / MASKS_DIR)
        tuned, base = load_weights(self.job_dir / MODEL_DIR), load_weights(self.model_path)
        report = audit(tuned, base, masks)
        atomic_write_text(self.job_dir / MASKS_DIR / AUDIT, json.dumps(report, indent=1) + "\n")
        self.event(
            "audit",
            kept_fraction=report["kept_fraction"],
            changed_fraction=report["changed_fraction"],
            changed_outside=report["changed_outside"],
            child_only=report["child_only"],
        )
        if ct_spec.audit_strict and not report["child_only"]:
            raise JobError(
                f"childtuning.audit_strict: {report['changed_outside']} elements outside the child moved "
                "(weight decay moves masked elements unless childtuning.strict_child is true)"
            )
        if ct_spec.strict_child:
            info = write_delta(self.job_dir / DELTA_DIR, self.job_dir / MODEL_DIR, tuned, base, masks)
            self.event("delta", delta_bytes=info["delta_bytes"], model_bytes=info["model_bytes"])

    # -- records ----------------------------------------------------------------------------
    def event(self, type_: str, **fields: Any) -> None:
        if self.recorder is not None:
            self.recorder.event(type_, **fields)

    def set_phase(self, phase: str) -> None:
        if phase != self.phase or phase == "preparing":
            self.phase = phase
            self.event("phase", phase=phase)
            self.status("running", force=True)

    def status(self, status: str, *, force: bool = False, error: str | None = None) -> None:
        if not self.is_main:
            return
        now = time.monotonic()
        if not force and now - self._status_at < 1.0:
            return
        self._status_at = now
        write_status(
            self.job_dir,
            status=status,
            phase=self.phase,
            step=self.step,
            total_steps=self.plan.total_steps if self.plan else None,
            best=self.best,
            final=self.final,
            error=error,
        )

    # -- signals and collectives ----------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # The signal may come twice (to the process group, and again from the launcher): the
        # launcher, not a second signal, decides when waiting is over (it sends SIGKILL).
        self.stop_signal = signum
        log.warning("rank %d: signal %d, stopping at the next step boundary", self.rank, signum)

    def check_stop(self) -> None:
        """Raise :class:`Interrupted` on every rank once any rank got a stop signal. Collective."""
        import torch

        flag = torch.tensor([1.0 if self.stop_signal is not None else 0.0], device=self.reduce_device)
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            raise Interrupted()

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close_process_group(self) -> None:
        """Shut the process group down before the interpreter does (a local call, no collective):
        gloo's threads left to the exit-time destructors could abort the rank with SIGABRT."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception as exc:  # the job's outcome is decided; this is only cleanup
                log.warning("rank %d: destroying the process group failed: %s", self.rank, exc)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def _resolve_device(device: str) -> str:
    if device != "auto":
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise JobError("resources.device: cuda was asked for but this worker has no GPU")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.train", description=__doc__.split("\n")[0])
    ap.add_argument("--job-dir", required=True, type=Path, help="the job's directory (holds job.json)")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s rank" + os.environ.get("RANK", "0") + " %(levelname)s %(message)s",
    )
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # ChildTuning's fused step replaces optimizer.step(); torch's scheduler then warns about the order.
    warnings.filterwarnings("ignore", message="Seems like `optimizer.step\\(\\)` has been overridden")
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor` is deprecated")
    job_dir: Path = args.job_dir.resolve()
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:  # started by hand, without a launcher
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(rendezvous_port()))
    if not (job_dir / JOB_FILE).is_file():
        print(f"error: {job_dir / JOB_FILE} not found", file=sys.stderr)
        return EXIT_USAGE
    try:
        spec = load_spec(job_dir / JOB_FILE)
    except SpecError as exc:
        if rank == 0:
            write_status(job_dir, status="failed", phase="preparing", step=0, error=str(exc))
        print(f"error: {job_dir / 'job.json'}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if spec.resources.num_ranks != world:
        message = (
            f"resources.num_ranks: the job asks for {spec.resources.num_ranks} ranks but was "
            f"launched with {world}"
        )
        if rank == 0:
            write_status(job_dir, status="failed", phase="preparing", step=0, error=message)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    previous = read_status(job_dir)
    if previous.get("status") == "succeeded" and (job_dir / MODEL_DIR / "config.json").is_file():
        log.info("job %s already succeeded; nothing to do", job_dir.name)
        return EXIT_OK
    return Run(job_dir, spec, rank, world).execute()
