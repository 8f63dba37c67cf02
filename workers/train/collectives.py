"""Where a rank runs and how it talks to the others: the device (:func:`resolve_device`), the
process group (:meth:`Collectives.start`: gloo on CPU, NCCL on CUDA) and the few collectives the
recipe uses (sums, "did any rank ...", gathering Python objects, barriers).

Every collective here is called on every rank at the same point of the recipe. Before the group
is up, or in a job of one rank, each is local: a sum leaves the tensor as it is, a gather
returns this rank's part alone.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from service.core import env
from workers.train.errors import JobError

if TYPE_CHECKING:
    import torch

__all__ = ["Collectives", "resolve_device"]

log = logging.getLogger("childtune.train")


def resolve_device(device: str) -> str:
    """``resources.device`` as this worker runs it: ``auto`` is cuda when a GPU is visible, else cpu;
    ``cuda`` without a GPU is the job's error."""
    if device != "auto":
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise JobError("resources.device: cuda was asked for but this worker has no GPU")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Collectives:
    """This rank's view of the job's process group: ``rank`` of ``world_size`` ranks."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank = rank
        self.world_size = world_size
        self.distributed = False  # start(): a process group is up
        self.reduce_device: torch.device | None = None  # start(): where all-reduced tensors live

    def start(self, device_kind: str) -> torch.device:
        """Threads for this rank, the process group (gloo on CPU, NCCL on CUDA) and this rank's
        device, which it returns (where batches go)."""
        import torch

        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        # The launcher gives each CPU rank its share of the job's thread budget (launch.cpu_threads);
        # without it (another launcher), the machine's cores are split over this host's ranks.
        raw = os.environ.get(env.CPU_THREADS, "").strip()
        threads = int(raw) if raw.isdigit() and int(raw) > 0 else (os.cpu_count() or 1) // max(1, local_world)
        torch.set_num_threads(max(1, threads))
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo" if device_kind == "cpu" else "nccl")
        self.distributed = torch.distributed.is_initialized()
        if device_kind == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            device = torch.device("cpu")
        self.reduce_device = device
        return device

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place. Collective."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on one of them. Collective."""
        import torch

        value = torch.tensor([1.0 if flag else 0.0], device=self.reduce_device)
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def gather_objects(self, part: Any) -> list[Any]:
        """Every rank's ``part``, in rank order. Collective."""
        if not self.distributed:
            return [part]
        import torch

        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, part)
        return gathered

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Shut the process group down before the interpreter does (a local call, no collective):
        gloo's threads left to the exit-time destructors could abort the rank with SIGABRT."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception as exc:  # the job's outcome is decided; this is only cleanup
                log.warning("rank %d: destroying the process group failed: %s", self.rank, exc)
