"""Causal-lm fine-tuning through REST on a real stack: chat files uploaded, a ChildTuning-D SFT
job of a tiny random Llama (no dropout) on 2 ranks at ZeRO-3 runs through the worker; its loss
before training equals one computed by hand over the answer tokens only; its mask is the same
bits as a 1-rank twin's; its final model downloads, loads with AutoModelForCausalLM and
generates with its chat template."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from childtuning import load_full_mask
from tests.e2e.stack import Stack, model_root
from tests.workers.test_sft import addition_rows, base_eval_loss
from tests.workers.tiny import write_tiny_decoder

FINAL = ("succeeded", "failed", "cancelled")


def wait(stack: Stack, job_id: str, timeout: float = 300) -> dict[str, Any]:
    client = stack.client()
    deadline = time.monotonic() + timeout
    while client.get_job(job_id)["status"] not in FINAL and time.monotonic() < deadline:
        time.sleep(1)
    final = client.get_job(job_id)
    log = stack.artifacts / "jobs" / job_id / "launcher.log"
    assert final["status"] == "succeeded", (final, log.read_text()[-3000:] if log.exists() else "")
    return final


def test_an_sft_job_with_childtuning_d_on_two_ranks_at_zero3_through_rest(
    stack: Stack, tmp_path: Path
) -> None:
    folder = model_root(stack.env) / "tiny-llama-sft"
    if not (folder / "config.json").is_file():
        write_tiny_decoder(folder, family="llama")
    rows = addition_rows(chat=True)
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows[:64]) + "\n")
    dev.write_text("\n".join(json.dumps(r) for r in rows[90:]) + "\n")
    client = stack.client()
    train_file, dev_file = client.upload_file(train), client.upload_file(dev)
    assert (train_file["layout"], dev_file["num_rows"]) == ("chat", 10)
    spec = {
        "model": "tiny-llama-sft",
        "dataset": {
            "train_file": train_file["id"],
            "eval_file": dev_file["id"],
            "task_type": "causal-lm",
            "metric": "exact_match",
        },
        "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3},
        "hyperparameters": {
            "max_steps": 4,
            "batch_size": 8,
            "learning_rate": 1e-2,
            "max_seq_length": 64,
            "eval_every": 2,
            "eval_samples": 2,
            "max_new_tokens": 3,
            "eval_at_start": True,
        },
        "resources": {"num_ranks": 2, "zero_stage": 3, "device": "cpu"},
    }
    job_id = client.submit(spec)["id"]
    twin_id = client.submit(
        {
            **spec,
            "hyperparameters": {**spec["hyperparameters"], "max_steps": 1},
            "resources": {"num_ranks": 1, "zero_stage": 2, "device": "cpu"},
        }
    )["id"]
    final = wait(stack, job_id)
    assert final["final_metrics"]["main_metric"] == "eval_exact_match"
    start, *evals = [r for r in client.all_records(job_id, "metrics") if r["kind"] == "eval"]
    # Only answer tokens count: the job's loss before training is the hand-computed one.
    assert start["step"] == 0 and start["eval_loss"] == pytest.approx(base_eval_loss(folder, dev), rel=1e-4)
    wait(stack, twin_id)
    masks = [load_full_mask(stack.artifacts / "jobs" / j / "masks") for j in (job_id, twin_id)]
    assert masks[0].keys() == masks[1].keys() and masks[0]
    assert all(torch.equal(masks[0][name], masks[1][name]) for name in masks[0])
    assert [r["step"] for r in evals] == [2, 4]
    answer_tokens = sum(len(str(9 + b)) + 2 for b in range(10))  # the answer, end of turn, newline
    assert all(r["eval_perplexity"] > 1 and r["eval_tokens"] == answer_tokens for r in evals)
    events = client.all_records(job_id, "events")
    samples = [e for e in events if e["type"] == "samples"]
    assert [len(e["samples"]) for e in samples] == [2, 2, 2]
    assert next(e for e in events if e["type"] == "data")["train"]["kept"] == 64
    assert client.mask(job_id)["num_elements"] > 0
    exported = client.download(job_id, "model", tmp_path / "model")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(exported).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+2="}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
