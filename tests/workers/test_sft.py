"""Causal-lm fine-tuning of decoders: the loss mask against hand-built examples, the overlong
policies, and real jobs (`childtune train`, real DeepSpeed ranks on CPU) with tiny random Llama
and GPT-2 models: ChildTuning-D at ZeRO-3 on 2 ranks, the same mask bits at 1 rank, exports
that load and generate, the GPT-2 block filter, a strict child's delta, and decoder classifiers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from childtuning import load_full_mask
from childtuning.delta import apply_delta
from service.core.datasets import SftRow
from service.core.jobdir import read_jsonl
from tests.workers.test_train import describe, run_job
from tests.workers.tiny import char_tokenizer, write_tiny_decoder
from workers.train.data import DatasetError, encode_sft
from workers.train.losses import causal_lm_loss, token_sums


@pytest.fixture(scope="module")
def decoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("decoders")
    return {family: write_tiny_decoder(base / family, family=family) for family in ("llama", "gpt2")}


# ---------------------------------------------------------------------------------------------
# The loss mask, by hand
# ---------------------------------------------------------------------------------------------


def test_only_completion_tokens_are_labelled_and_scored(decoders: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(decoders["llama"]))
    model = AutoModelForCausalLM.from_pretrained(str(decoders["llama"])).eval()
    row = SftRow(1, prompt="12+30=", completion="42")
    data, counts = encode_sft([row], tokenizer, 128, overlong="fail", chat_template=None, source="f")
    batch = data.batch([0])
    # By hand: ChatML's user turn, then the assistant's header (not trained), then its answer
    # and end of turn (trained).
    prompt = tokenizer(
        "<|im_start|>user\n12+30=<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
    )
    answer = tokenizer("42<|im_end|>\n", add_special_tokens=False)
    expected = prompt["input_ids"] + answer["input_ids"]
    assert batch["input_ids"][0].tolist() == expected
    assert batch["labels"][0].tolist() == [-100] * len(prompt["input_ids"]) + answer["input_ids"]
    assert counts.target_tokens == len(answer["input_ids"]) == 4  # "4", "2", end of turn, newline
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits[0]
        start = len(prompt["input_ids"])
        by_hand = -sum(
            torch.log_softmax(logits[t - 1], dim=-1)[expected[t]] for t in range(start, len(expected))
        ) / len(answer["input_ids"])
        loss = causal_lm_loss(model, batch, tokens_per_rank=len(answer["input_ids"]))
        # Changing a prompt token's label would change nothing: only answer positions count.
        ce, count, _ = token_sums(logits[None], batch["labels"])
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)
    assert int(count) == 4 and float(ce) == pytest.approx(4 * float(by_hand), rel=1e-5)
    assert data.generation_batch([0])["input_ids"][0].tolist() == prompt["input_ids"]
    assert data.references == ["42"]


def test_plain_rows_end_with_eos_and_chat_rows_train_every_assistant_turn() -> None:
    tokenizer = char_tokenizer(chat=False)
    tokenizer.pad_token = tokenizer.eos_token  # type: ignore[attr-defined]
    data, _ = encode_sft(
        [SftRow(3, prompt="ab", completion="c")],
        tokenizer,
        32,
        overlong="fail",
        chat_template=None,
        source="f",
    )
    eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
    c = tokenizer("c", add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    assert data.batch([0])["labels"][0].tolist() == [-100, -100, *c, eos]
    with pytest.raises(DatasetError, match="line 4: a chat row needs a tokenizer with a chat template"):
        encode_sft(
            [SftRow(4, messages=(("user", "a"), ("assistant", "b")))],
            tokenizer,
            32,
            overlong="fail",
            chat_template=None,
            source="f",
        )
    chat = char_tokenizer(chat=True)
    row = SftRow(5, messages=(("user", "a"), ("assistant", "x"), ("user", "b"), ("assistant", "yz")))
    data, _ = encode_sft([row], chat, 128, overlong="fail", chat_template=None, source="f")
    batch = data.batch([0])
    trained = [
        t
        for t, label in zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist(), strict=True)
        if label != -100
    ]
    assert chat.decode(trained) == "x<|im_end|>\nyz<|im_end|>\n"  # type: ignore[attr-defined]
    assert chat.decode(data.generation_batch([0])["input_ids"][0].tolist()).endswith(  # type: ignore[attr-defined]
        "<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (data.questions, data.references) == (["b"], ["yz"])


def test_overlong_rows_are_truncated_dropped_or_fail_naming_the_line() -> None:
    tokenizer = char_tokenizer(chat=True)
    rows = [
        SftRow(1, prompt="a", completion="b"),  # 23 tokens with the template
        SftRow(2, prompt="a" * 40, completion="b"),  # the prompt alone is past the limit
        SftRow(3, prompt="a", completion="b" * 40),  # the answer is cut
    ]
    data, counts = encode_sft(rows, tokenizer, 24, overlong="truncate", chat_template=None, source="f")
    assert (counts.kept, counts.truncated, counts.dropped_no_target, counts.dropped_overlong) == (2, 1, 1, 0)
    assert counts.first_dropped_lines == [2] and data.lines == [1, 3]
    assert int(data.lengths.max()) == 24
    data, counts = encode_sft(rows, tokenizer, 24, overlong="drop", chat_template=None, source="f")
    assert (counts.kept, counts.dropped_overlong, counts.first_dropped_lines) == (1, 2, [2, 3])
    with pytest.raises(
        DatasetError, match=r"train.jsonl: line 2: 62 tokens, more than hyperparameters.max_seq_length \(24\)"
    ):
        encode_sft(rows, tokenizer, 24, overlong="fail", chat_template=None, source="train.jsonl")
    with pytest.raises(DatasetError, match="every row is longer"):
        encode_sft(rows[1:2], tokenizer, 24, overlong="drop", chat_template=None, source="f")


# ---------------------------------------------------------------------------------------------
# Real jobs
# ---------------------------------------------------------------------------------------------


def addition_rows(chat: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for a in range(10):
        for b in range(10):
            prompt, answer = f"{a}+{b}=", str(a + b)
            if chat:
                rows.append(
                    {
                        "messages": [
                            {"role": "system", "content": "add"},
                            {"role": "user", "content": prompt},
                            {"role": "assistant", "content": answer},
                        ]
                    }
                )
            else:
                rows.append({"prompt": prompt, "completion": answer})
    return rows


def write_data(folder: Path, *, chat: bool) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = addition_rows(chat)
    train, dev = folder / "train.jsonl", folder / "dev.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows[:80]) + "\n")
    dev.write_text("\n".join(json.dumps(r) for r in rows[80:]) + "\n")
    return train, dev


def sft_spec(model: Path, train: Path, dev: Path, **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": str(model),
        "dataset": {
            "train_file": str(train),
            "eval_file": str(dev),
            "task_type": "causal-lm",
            "metric": "exact_match",
        },
        "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3},
        "hyperparameters": {
            "max_steps": 6,
            "batch_size": 8,
            "learning_rate": 1e-2,
            "max_seq_length": 64,
            "eval_every": 3,
            "seed": 3,
            "eval_at_start": True,
            "eval_samples": 2,
            "max_new_tokens": 4,
        },
        "resources": {"num_ranks": 2, "zero_stage": 3, "device": "cpu"},
    }
    for key, value in over.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    return spec


def base_eval_loss(model_dir: Path, dev: Path) -> float:
    """The base model's mean cross-entropy over every answer token of the dev rows, computed
    here by hand: the tokens after the rendered prompt (with the generation prompt) are scored."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    total, count = 0.0, 0
    for row in read_jsonl(dev):
        messages = row["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
        total -= sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))
        count += len(ids) - start
    return total / count


@pytest.fixture(scope="module")
def llama_d(tmp_path_factory: pytest.TempPathFactory, decoders: dict[str, Path]) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("sft")
    train, dev = write_data(base / "data", chat=True)
    spec = sft_spec(decoders["llama"], train, dev)
    job_dir = base / "two"
    proc = run_job(job_dir, spec)
    return {"dir": job_dir, "spec": spec, "proc": proc, "dev": dev, "base": base}


@pytest.mark.slow
def test_sft_with_childtuning_d_on_two_ranks_at_zero3(
    llama_d: dict[str, Any], decoders: dict[str, Path]
) -> None:
    job_dir, proc = llama_d["dir"], llama_d["proc"]
    assert proc.returncode == 0, describe(proc, job_dir)
    evals = [r for r in read_jsonl(job_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 3, 6]
    for record in evals:
        assert record["eval_perplexity"] == pytest.approx(math.exp(record["eval_loss"]), rel=1e-9)
        assert 0 <= record["eval_token_accuracy"] <= 1 and 0 <= record["eval_exact_match"] <= 1
        assert record["eval_tokens"] == 20 * 2 + sum(len(str(a + b)) for a in range(8, 10) for b in range(10))
    # The loss counts completion tokens only: the job's step-0 evaluation equals the hand computation.
    assert evals[0]["eval_loss"] == pytest.approx(base_eval_loss(decoders["llama"], llama_d["dev"]), rel=1e-4)
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    events = read_jsonl(job_dir / "events.jsonl")
    data = next(e for e in events if e["type"] == "data")
    assert (data["train"]["kept"], data["eval"]["kept"], data["chat_template"]) == (80, 20, True)
    samples = [e for e in events if e["type"] == "samples"]
    assert [e["step"] for e in samples] == [0, 3, 6]
    assert [s["reference"] for s in samples[-1]["samples"]] == ["8", "9"]
    assert [s["prompt"] for s in samples[-1]["samples"]] == ["8+0=", "8+1="]
    summary = json.loads((job_dir / "masks" / "summary.json").read_text())
    assert len(summary["shards"]) == 2 and summary["params"]
    assert all(".layers." in name for name in summary["params"])  # the Llama blocks, by default
    predictions = json.loads((job_dir / "predictions.json").read_text())
    assert predictions["step"] == 6 and len(predictions["predictions"]) == 20


@pytest.mark.slow
def test_the_export_loads_generates_and_keeps_the_chat_template(
    llama_d: dict[str, Any], decoders: dict[str, Path]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job_dir = llama_d["dir"]
    assert llama_d["proc"].returncode == 0, describe(llama_d["proc"], job_dir)
    model = AutoModelForCausalLM.from_pretrained(str(job_dir / "model")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(job_dir / "model"))
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(str(decoders["llama"])).chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+2="}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3 or int(out[0, -1]) == tokenizer.eos_token_id
    base = AutoModelForCausalLM.from_pretrained(str(decoders["llama"]))
    moved = [n for n, p in model.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert moved  # training changed the weights
    card = json.loads((job_dir / "model" / "childtune.json").read_text())
    assert card["task_type"] == "causal-lm"
    assert "AutoModelForCausalLM" in (job_dir / "model" / "README.md").read_text()


@pytest.mark.slow
def test_the_d_mask_is_the_same_bits_at_one_and_two_ranks(llama_d: dict[str, Any]) -> None:
    assert llama_d["proc"].returncode == 0, describe(llama_d["proc"], llama_d["dir"])
    one = {**llama_d["spec"], "resources": {**llama_d["spec"]["resources"], "num_ranks": 1}}
    one["hyperparameters"] = {**one["hyperparameters"], "max_steps": 1, "eval_at_start": False}
    one_dir = llama_d["base"] / "one"
    proc = run_job(one_dir, one)
    assert proc.returncode == 0, describe(proc, one_dir)
    a, b = load_full_mask(one_dir / "masks"), load_full_mask(llama_d["dir"] / "masks")
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_gpt2_blocks_by_default_a_filter_selecting_nothing_is_refused_and_a_strict_child_ships_as_delta(
    tmp_path: Path, decoders: dict[str, Path]
) -> None:
    train, dev = write_data(tmp_path / "data", chat=False)
    over = {
        "dataset": {"metric": "perplexity"},
        "childtuning": {"strict_child": True},
        "hyperparameters": {"max_steps": 3, "eval_at_start": False},
        "resources": {"num_ranks": 1, "zero_stage": 2},
    }
    spec = sft_spec(decoders["gpt2"], train, dev, **over)
    job_dir = tmp_path / "gpt2"
    proc = run_job(job_dir, spec)
    assert proc.returncode == 0, describe(proc, job_dir)
    summary = json.loads((job_dir / "masks" / "summary.json").read_text())
    assert summary["params"] and all(".h." in name for name in summary["params"])
    data = next(e for e in read_jsonl(job_dir / "events.jsonl") if e["type"] == "data")
    assert data["chat_template"] is False  # GPT-2 has none: plain prompt + completion + eos
    rebuilt = tmp_path / "rebuilt"
    apply_delta(decoders["gpt2"], job_dir / "delta", rebuilt)
    from safetensors.torch import load_file

    exported, again = (
        load_file(str(job_dir / "model" / "model.safetensors")),
        load_file(str(rebuilt / "model.safetensors")),
    )
    assert exported.keys() == again.keys()
    assert all(torch.equal(exported[k], again[k]) for k in exported)
    # The official word alone selects nothing in GPT-2: the job fails before training, naming the field.
    bad = sft_spec(decoders["gpt2"], train, dev, **{**over, "childtuning": {"param_filter": "layer"}})
    bad_dir = tmp_path / "bad"
    proc = run_job(bad_dir, bad)
    assert proc.returncode != 0
    status = json.loads((bad_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("childtuning.param_filter:")
    assert not (bad_dir / "model").exists()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_decoder_backbone_classifies_with_its_padding_handled(
    tmp_path: Path, decoders: dict[str, Path], family: str
) -> None:
    from transformers import AutoModelForSequenceClassification

    spec = {
        "model": str(decoders[family]),
        "dataset": {"preset": "glue/rte", "max_train_examples": 32, "max_eval_examples": 16},
        "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3},
        "hyperparameters": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3, "max_seq_length": 48},
        "resources": {"num_ranks": 1, "zero_stage": 2, "device": "cpu"},
    }
    job_dir = tmp_path / family
    proc = run_job(job_dir, spec)
    assert proc.returncode == 0, describe(proc, job_dir)
    model = AutoModelForSequenceClassification.from_pretrained(str(job_dir / "model"))
    assert model.config.pad_token_id is not None and model.config.num_labels == 2
    final = [r for r in read_jsonl(job_dir / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert 0 <= final["eval_accuracy"] <= 1
