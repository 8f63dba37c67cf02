"""docker/gpu_slots.py, the worker image's entry point: each replica gets a GPU set of its own.

Run as the image runs it (a process that execs the worker), with a stand-in ``nvidia-smi`` that
lists made-up GPUs and a lock folder in tmp. A "worker" here is a Python process that prints the
CUDA_VISIBLE_DEVICES it was given and sleeps: while it lives it holds its GPUs' locks.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "gpu_slots.py"
HOLD = [
    sys.executable,
    "-c",
    "import os, time; print(os.environ.get('CUDA_VISIBLE_DEVICES', '-'), flush=True); time.sleep(60)",
]
SHOW = [sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES', '-'))"]


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_slots", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Host:
    """A made-up GPU host: a fake nvidia-smi on PATH and the shared lock folder."""

    def __init__(self, tmp: Path, num_gpus: int) -> None:
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.slots = tmp / "gpu-slots"
        lines = "".join(f"{i}, GPU-{i:08d}-fake\\n" for i in range(num_gpus))
        smi = self.bin / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
        smi.chmod(0o755)
        self.holders: list[subprocess.Popen[str]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "CHILDTUNE_QUEUES")}
        env.update(PATH=f"{self.bin}:/usr/bin:/bin", CHILDTUNE_GPU_SLOTS=str(self.slots), **extra)
        return env

    def run(self, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(SCRIPT), *command]
        return subprocess.run(argv, env=self.env(**env), capture_output=True, text=True, timeout=60)

    def hold(self, queues: str) -> str:
        """Start a long-lived worker on ``queues``; the GPUs it got ("-" for none)."""
        argv = [sys.executable, str(SCRIPT), *HOLD]
        proc = subprocess.Popen(
            argv, env=self.env(CHILDTUNE_QUEUES=queues), stdout=subprocess.PIPE, text=True
        )
        self.holders.append(proc)
        assert proc.stdout is not None
        return proc.stdout.readline().strip()

    def stop(self, index: int) -> None:
        proc = self.holders[index]
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    made = Host(tmp_path, num_gpus=4)
    yield made
    for proc in made.holders:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_replicas_get_different_gpus_and_a_crash_frees_them(host: Host) -> None:
    assert [host.hold("gpu-x1") for _ in range(4)] == ["0", "1", "2", "3"]
    full = host.run(*SHOW, CHILDTUNE_QUEUES="gpu-x1")
    assert full.returncode == 3
    assert "all 4 sets of 1 GPU(s)" in full.stderr and "at most 4" in full.stderr
    host.stop(1)  # SIGKILL: no cleanup ran, the kernel dropped the lock
    assert host.hold("gpu-x1") == "1"


def test_sets_are_aligned_and_skip_partly_taken_ones(host: Host) -> None:
    assert host.hold("gpu-x1") == "0"
    assert host.hold("gpu-x2") == "2,3"
    assert host.run(*SHOW, CHILDTUNE_QUEUES="gpu-x2").returncode == 3
    assert host.hold("gpu-x1") == "1"


def test_the_command_queues_decide_over_the_environment(host: Host) -> None:
    done = host.run(*SHOW, "--queues", "gpu-x4", CHILDTUNE_QUEUES="gpu-x1")
    assert (done.returncode, done.stdout.strip()) == (0, "0,1,2,3")
    done = host.run(*SHOW, "--queues=cpu-x2", CHILDTUNE_QUEUES="gpu-x1")
    assert (done.returncode, done.stdout.strip()) == (0, "-")


def test_too_few_gpus_or_a_bad_queue_is_an_error(host: Host) -> None:
    done = host.run(*SHOW, CHILDTUNE_QUEUES="gpu-x8")
    assert done.returncode == 3 and "needs 8 GPUs; this container sees 4" in done.stderr
    done = host.run(*SHOW, CHILDTUNE_QUEUES="gpu-a100")
    assert done.returncode == 3 and "'gpu-a100' is not of the form" in done.stderr


def test_operator_choice_and_cpu_queues_claim_nothing(tmp_path: Path) -> None:
    bare = Host(tmp_path, num_gpus=0)
    (bare.bin / "nvidia-smi").unlink()  # no GPU at all: nothing may ask for one
    done = bare.run(*SHOW, CHILDTUNE_QUEUES="gpu-x2", CUDA_VISIBLE_DEVICES="5,6")
    assert (done.returncode, done.stdout.strip()) == (0, "5,6")
    done = bare.run(*SHOW, CHILDTUNE_QUEUES="cpu-x1,cpu-x4")
    assert (done.returncode, done.stdout.strip()) == (0, "-")
    done = bare.run(*SHOW, CHILDTUNE_QUEUES="gpu-x1")
    assert done.returncode == 3 and "nvidia-smi not found" in done.stderr
    assert not bare.slots.exists()


def test_set_size_of_queue_lists() -> None:
    gpu_slots = load_module()
    assert gpu_slots.gpus_per_worker("gpu-x1") == 1
    assert gpu_slots.gpus_per_worker("gpu-x2, gpu-x8,cpu-x1") == 8
    assert gpu_slots.gpus_per_worker("cpu-x4") == 0
    with pytest.raises(gpu_slots.SlotError, match="empty"):
        gpu_slots.gpus_per_worker(" , ")
    assert gpu_slots.queues_of(["childtune", "worker"], {}) == "gpu-x1"
    assert gpu_slots.queues_of(["childtune", "worker", "-c", "1"], {"CHILDTUNE_QUEUES": "gpu-x2"}) == "gpu-x2"


def test_the_exec_keeps_the_exit_status_and_reports_a_missing_command(host: Host) -> None:
    assert host.run(sys.executable, "-c", "raise SystemExit(7)", CHILDTUNE_QUEUES="cpu-x1").returncode == 7
    done = host.run("no-such-command-here", CHILDTUNE_QUEUES="cpu-x1")
    assert done.returncode == 127 and "cannot run 'no-such-command-here'" in done.stderr
    assert host.run().returncode == 2
