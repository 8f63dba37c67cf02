"""TensorBoard on a full disk. tensorboardX's ``SummaryWriter`` writes from a thread fed by a
multiprocessing queue: on ENOSPC that thread dies, the queue's feeder thread blocks on a pipe
nobody reads, and adds, flushes and the interpreter's exit (which joins the feeder) then block
for good. A job on a full disk hung, `running`, and so did the suite's own process at exit (CI
timed out after every test had passed). The sink now writes synchronously and stops on the first
failed write; the process that used it must still finish."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.stack import mount_tmpfs
from workers.train.sinks import TensorBoardSink

# Fill the disk after the first record, write hundreds more, close, and exit: all must return.
CHILD = """
import contextlib, sys
from pathlib import Path
from workers.train.sinks import TensorBoardSink
disk = Path(sys.argv[1])
sink = TensorBoardSink(disk / "tb")
sink.metric({"kind": "train", "step": 1, "loss": 1.0})
with contextlib.suppress(OSError), (disk / "filler").open("wb") as out:
    while True:
        out.write(b"\\0" * 65536)
sink.FLUSH_S = 0.0
for step in range(2, 400):
    sink.metric({"kind": "train", "step": step, "loss": 1.0, "lr": 0.1, "grad_norm": 1.0})
sink.close()
print("closed", flush=True)
"""


def test_a_full_disk_stops_the_tensorboard_sink_and_its_process_still_exits(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "1m"):
        pytest.skip("cannot mount a small tmpfs here (needs root): no full disk to make")
    try:
        # bounded: a hang (in a write, the close or the exit) fails here instead of stalling the suite
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(disk)], capture_output=True, text=True, timeout=120
        )
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "closed"
    assert "no more TensorBoard records" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def test_records_are_written_flushed_and_readable(tmp_path: Path) -> None:
    from tests.workers.test_train import tensorboard_tags

    sink = TensorBoardSink(tmp_path / "tb")
    sink.metric({"kind": "train", "step": 1, "loss": 0.5, "lr": 0.1, "is_best": True})
    sink.metric({"kind": "eval", "step": 1, "eval_accuracy": 0.75, "eval_loss": float("nan")})
    sink.close()
    sink.close()  # a second close is a no-op
    assert tensorboard_tags(tmp_path / "tb") == {"train/loss", "train/lr", "eval/accuracy"}
