"""The recipe of one job on one rank (:class:`Run`), read top to bottom: setup, train, finish.

Prepare (data, model, DeepSpeed engine, resume from the latest checkpoint), the ChildTuning masks
(the Fisher pass for ChildTuning-D, or the saved ones), train with evaluation and checkpoints,
export ``model/``. ``python -m workers.train`` (:mod:`workers.train.main`) runs it on every rank.
Rank 0 alone writes the records (:mod:`workers.train.records`); decisions that end the loop (a
stop signal, a non-finite loss) come from all-reduced values (:mod:`workers.train.collectives`),
so every rank takes them at the same step. Files, records, exit codes: ``docs/job-directory.md``.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from service.core import env
from service.core.jobdir import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    MODEL_DIR,
    ArtifactsLayout,
)
from workers.train.collectives import resolve_device
from workers.train.errors import Interrupted, JobError
from workers.train.evaluation import evaluate
from workers.train.export import audit_child, export
from workers.train.plan import Plan, deepspeed_config, optimizer_groups, step_seed
from workers.train.state import RunState

if TYPE_CHECKING:
    from workers.train.data import Splits

__all__ = ["Run", "files_dir"]

log = logging.getLogger("childtune.train")


def files_dir(job_dir: Path) -> Path | None:
    """Where uploaded dataset files live: ``$CHILDTUNE_FILES_DIR``, else ``<artifacts>/files``."""
    override = os.environ.get(env.FILES_DIR)
    if override:
        return Path(override)
    candidate = ArtifactsLayout.of_job(job_dir).files
    return candidate if candidate.is_dir() else None


class Run(RunState):
    """One rank's part of one job, read top to bottom as a recipe.

    :meth:`execute` runs :meth:`setup` (device, data, process group, model, datasets, DeepSpeed
    engine, resume, ChildTuning), then :meth:`train` (after each step :meth:`should_evaluate` and
    :meth:`should_save` say what follows it), then :meth:`finish` (the ``model/`` export).
    Its attributes are declared in :class:`RunState`: ``Run(job_dir, spec, rank)``.
    """

    # -- main ---------------------------------------------------------------------------------
    def execute(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        records = self.records
        records.open()
        try:
            records.status("running", force=True)
            records.set_phase("preparing")
            self.setup()
            self.train()
            self.finish()
            records.event("finished", status="succeeded", step=self.step, error=None)
            records.status("succeeded", force=True)
            return EXIT_OK
        except Interrupted:
            records.event("finished", status="interrupted", step=self.step, error=None)
            records.status("interrupted", force=True)
            return EXIT_INTERRUPTED
        except Exception as exc:
            known = isinstance(exc, JobError | ValueError)
            message = str(exc) if known else f"{type(exc).__name__}: {exc}"
            if not known:
                log.error("rank %d failed:\n%s", self.rank, traceback.format_exc())
            else:
                log.error("rank %d: %s", self.rank, message)
            # During training the error belongs to the step in progress.
            at = self.step + 1 if records.phase == "training" else None
            records.event("error", message=message, step=at)
            records.event("finished", status="failed", step=self.step, error=message)
            try:
                records.status("failed", force=True, error=message)
            except OSError as write_error:  # a full disk: the supervisor reports what it can
                log.error("rank %d: cannot record the failure: %s", self.rank, write_error)
            return EXIT_FAILED
        finally:
            records.close()
            self.comm.close()

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
        """Resolve ``resources.device``; on CPU, tell DeepSpeed (before its import) and refuse fp16
        (DeepSpeed's CPU accelerator has no fp16 loss scaling; bf16 needs none and runs)."""
        res = self.spec.resources
        device = resolve_device(res.device)
        if device == "cpu" and res.precision == "fp16":
            raise JobError("resources.precision: fp16 needs a GPU; this job runs on CPU, use bf16 or fp32")
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
        assert self.device_kind is not None
        self.torch_device = self.comm.start(self.device_kind)

    def _setup_model(self) -> None:
        """Load the model and its tokenizer; the new classifier head is the same on every rank."""
        import torch

        from workers.train.model_io import load_model, model_location

        assert self.info is not None
        self.model_path = model_location(self.spec.model)
        torch.manual_seed(self.spec.hyperparameters.seed)
        self.tokenizer, self.hf_model = load_model(self.model_path, self.info)

    def _setup_datasets(self, splits: Splits) -> None:
        """Tokenize the training and evaluation splits (causal-lm: render, label, apply ``overlong``)."""
        from workers.train.inputs import encode_splits

        inputs = encode_splits(self.spec, splits, self.tokenizer)
        self.train_set, self.eval_set, self.answer_tokens = inputs.train, inputs.eval, inputs.answer_tokens
        if splits.info.is_causal_lm:
            # Rows left out change the number of steps: plan them on what is kept.
            self.plan = Plan.make(self.spec, len(self.train_set), self.world_size)
            self.records.event("data", **inputs.data_event)

    def _setup_engine(self) -> None:
        """The DeepSpeed engine: AdamW, torch's or the 2021 Hugging Face rule (no decay on biases
        and norms), warmup-then-decay LR, ZeRO."""
        import deepspeed
        import torch

        hp, plan = self.spec.hyperparameters, self.plan
        assert plan is not None
        model = self.hf_model
        groups = optimizer_groups(model, hp.weight_decay)
        optimizer: torch.optim.Optimizer
        if hp.optimizer == "adamw-hf2021":  # the official ChildTuning code's rule
            from childtuning import AdamWHF2021

            optimizer = AdamWHF2021(groups, lr=hp.learning_rate)
        else:
            optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: plan.lr_factor(step))
        config = deepspeed_config(self.spec, plan)
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
        self.comm.barrier()
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
        self.records.event(
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
            self.records.event("resumed", from_step=self.resumed_from, checkpoint=checkpoint)

    def _setup_childtuning(self) -> None:
        """ChildTuning's masks (ChildTuning-D: the saved ones, else the Fisher pass), then its hook."""
        from workers.train.masks import attach_childtuning

        self.ct, self.handle = attach_childtuning(self)

    # -- train ------------------------------------------------------------------------------------
    def train(self) -> None:
        import torch

        from workers.train.data import shard_indices

        hp, plan = self.spec.hyperparameters, self.plan
        assert plan is not None and self.train_set is not None
        if hp.eval_at_start and self.resumed_from is None:
            evaluate(self, 0, last=False, at_start=True)  # the base model's score, for reference
        self.records.set_phase("training")
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
            totals = torch.zeros(2, dtype=torch.float64, device=self.comm.reduce_device)  # loss sum, tokens
            for micro in range(gas):
                first = (in_epoch * gas + micro) * per
                batch = self.to_device(self.train_set.batch(order[first : first + per]))
                loss = self.loss(batch)
                self.engine.backward(loss)
                self.engine.step()
                totals[0] += loss.detach().double()
                totals[1] += batch["attention_mask"].sum()
            self.comm.sum_(totals)
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
            self.records.metric(
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
            self.records.status("running")
            last = step == plan.total_steps
            stopping = False
            if self.should_evaluate(step):
                stopping = evaluate(self, step, last=last)
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

    def loss(self, batch: dict[str, Any]) -> Any:
        """The micro-batch's training loss (:func:`workers.train.losses.train_loss`)."""
        from workers.train.losses import train_loss

        assert self.info is not None
        alpha = self.spec.hyperparameters.rdrop_alpha
        return train_loss(self.engine, batch, self.info, rdrop_alpha=alpha, comm=self.comm)

    def device_memory(self) -> dict[str, float]:
        """Rank 0's peak GPU memory so far (MiB), on CUDA; nothing on CPU."""
        if self.torch_device is None or self.torch_device.type != "cuda":
            return {}
        import torch

        return {"gpu_peak_memory_mib": torch.cuda.max_memory_allocated(self.torch_device) / 2**20}

    def save_checkpoint(self, step: int, *, last: bool = False) -> None:
        from workers.train import checkpoints

        self.records.set_phase("saving")
        keep = self.spec.hyperparameters.keep_checkpoints
        state = {"best": self.best, "evals_without_improvement": self.evals_without_improvement}
        path = checkpoints.save(self.engine, self.ckpt_dir, step, state, keep)
        self.records.event("checkpoint", name=path.name, step=step, path=str(path))
        if not last:  # after the last step the job goes on saving (the model export)
            self.records.set_phase("training")

    # -- finish -----------------------------------------------------------------------------------
    def finish(self) -> None:
        """``model/`` from the final weights; ChildTuning-D: the audit (a strict child: ``delta/``)."""
        assert self.handle is not None
        self.records.set_phase("saving")
        export(self, MODEL_DIR, self.step, self.last_eval)
        if self.is_main and self.spec.childtuning.mode == "childtuning-d":
            audit_child(self)
        self.handle.remove()

    # -- signals ----------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # The signal may come twice (to the process group, and again from the launcher): the
        # launcher, not a second signal, decides when waiting is over (it sends SIGKILL).
        self.stop_signal = signum
        log.warning("rank %d: signal %d, stopping at the next step boundary", self.rank, signum)
