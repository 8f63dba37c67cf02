"""TensorBoard on a full disk: tensorboardX's writer thread dies on ENOSPC and every later add,
flush or close blocked forever on its queue (a job on a full disk hung, `running`, for good).
The sink now notices the dead thread and stops; the job goes on to fail on its own writes."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from pathlib import Path

import pytest

from workers.train.sinks import TensorBoardSink


def test_a_full_disk_stops_the_tensorboard_sink_instead_of_hanging_the_job(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): no full disk to make")
    try:
        sink = TensorBoardSink(disk / "tb")
        sink.metric({"kind": "train", "step": 1, "loss": 1.0})
        with contextlib.suppress(OSError), (disk / "filler").open("wb") as out:
            while True:
                out.write(b"\0" * 65536)

        def train() -> None:
            for step in range(2, 400):
                sink.metric({"kind": "train", "step": step, "loss": 1.0, "lr": 0.1, "grad_norm": 1.0})
            sink.close()

        worker = threading.Thread(target=train, daemon=True)
        worker.start()
        worker.join(timeout=120)  # bounded: a hang fails here instead of stalling the suite
        assert not worker.is_alive(), "the TensorBoard sink blocked on a full disk"
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
