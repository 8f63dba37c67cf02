"""The child network on the weights: an audit of what moved, and a sparse delta of the base.

A ChildTuning-D job changes, inside the filtered parameters, only the elements its mask keeps,
when masked elements get no update at all (``strict_child``). Then the fine-tuned model is the
base model plus a sparse change: the mask (a bit per element), the kept elements' new values,
and the parameters outside the filter (embeddings, pooler, classifier) in full.

- :func:`audit` compares fine-tuned weights with the base, per masked parameter: the fraction
  of elements that changed against the fraction the mask kept, and how many moved outside it.
- :func:`write_delta` stores the sparse change in a folder (``delta.json`` and one safetensors
  file), refusing when an element outside the child moved (the delta could not rebuild it).
- :func:`apply_delta` rebuilds the fine-tuned weights bit-exactly from the base model folder.

Weights are read from a model folder's ``*.safetensors`` files (or ``pytorch_model*.bin``). A
fine-tuned model's names may carry a prefix the base's lack (``bert.encoder...`` against
``encoder...``): each masked parameter is matched to the base key it ends with.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from childtuning.bits import pack_bits, unpack_bits

DELTA_JSON = "delta.json"
DELTA_TENSORS = "delta.safetensors"
AUDIT = "audit.json"
FORMAT = 1
# Files of a model folder the delta carries over as they are (config, tokenizer, card).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def load_weights(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face model folder, by the names it was saved under."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    out: dict[str, torch.Tensor] = {}
    if files:
        for path in files:
            out.update(load_file(str(path)))
        return out
    for path in sorted(model_dir.glob("pytorch_model*.bin")):
        out.update(torch.load(path, map_location="cpu", weights_only=True))
    if not out:
        raise ValueError(f"{model_dir}: no *.safetensors or pytorch_model*.bin weights")
    return out


def match_base_keys(names: list[str], base_keys: list[str]) -> dict[str, str]:
    """For each name, the base key it is (``name == key``) or ends with (``name == prefix.key``);
    names the base has no weight for (a new head) are left out."""
    keys = set(base_keys)
    out: dict[str, str] = {}
    for name in names:
        parts = name.split(".")
        found = [".".join(parts[i:]) for i in range(len(parts)) if ".".join(parts[i:]) in keys]
        if found:
            out[name] = found[0]  # the longest: the most specific match
    return out


def audit(
    tuned: Mapping[str, torch.Tensor], base_all: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """Per masked parameter: elements kept by the mask, elements that changed from the base, and
    how many of those lie outside the mask. ``tuned`` and ``base_all`` are the weights of the
    fine-tuned and the base folder (:func:`load_weights`). Masked parameters the base has no
    weight for (a new head) are listed under ``not_in_base``."""
    keys = match_base_keys(sorted(masks), list(base_all))
    params: dict[str, Any] = {}
    totals = {"numel": 0, "kept": 0, "changed": 0, "changed_outside": 0}
    for name, keep in masks.items():
        if name not in keys or name not in tuned:
            continue
        new, old = tuned[name], base_all[keys[name]].to(tuned[name].dtype)
        changed = new != old
        row: dict[str, float] = {
            "numel": keep.numel(),
            "kept": int(keep.sum()),
            "changed": int(changed.sum()),
            "changed_outside": int((changed & ~keep.view(changed.shape)).sum()),
        }
        for key in totals:
            totals[key] += int(row[key])
        row["kept_fraction"] = row["kept"] / max(1, row["numel"])
        row["changed_fraction"] = row["changed"] / max(1, row["numel"])
        params[name] = row
    return {
        **totals,
        "kept_fraction": totals["kept"] / max(1, totals["numel"]),
        "changed_fraction": totals["changed"] / max(1, totals["numel"]),
        # only the child moved: the model is the base plus a sparse change inside the filter
        "child_only": totals["changed_outside"] == 0,
        "not_in_base": sorted(set(masks) - set(keys)),
        "params": params,
    }


def rounded(weights: Mapping[str, torch.Tensor], precision: str | None) -> dict[str, torch.Tensor]:
    """``weights`` as a ``precision`` ("bf16", "fp16") DeepSpeed job's fp32 master copy starts
    (it is made from the module's rounded copies): floating tensors rounded to it and back to
    fp32. None or "fp32" leaves them as they are."""
    return {k: rounded_tensor(v, precision) for k, v in weights.items()}


def rounded_tensor(t: torch.Tensor, precision: str | None) -> torch.Tensor:
    """One tensor as :func:`rounded` makes it."""
    if precision in (None, "fp32") or not t.is_floating_point():
        return t
    if precision not in ("bf16", "fp16"):
        raise ValueError(f"precision: {precision!r} is not bf16, fp16 or fp32")
    return t.to(torch.bfloat16 if precision == "bf16" else torch.float16).float()


def _fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(name.encode())
        digest.update(str(t.dtype).encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_delta(
    out_dir: str | Path,
    model_dir: str | Path,
    tuned: Mapping[str, torch.Tensor],
    base_all: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    base_rounded_to: str | None = None,
) -> dict[str, Any]:
    """Write the sparse change from the base to the fine-tuned folder ``model_dir``, whose
    weights are ``tuned``; ``base_all`` holds the base folder's (:func:`load_weights`).
    ``base_rounded_to`` ("bf16", "fp16"): the job trained in that precision, so the elements
    outside the child hold the base rounded to it (:func:`rounded`); the delta says so and
    :func:`apply_delta` rounds the base the same way.

    Masked parameters are stored as their packed mask and the kept elements' values; every other
    tensor of ``model_dir`` in full; its other files (config, tokenizer, card) as they are.
    Raises ValueError when an element outside the mask differs from the base. Returns the
    description written to ``delta.json`` (sizes included)."""
    out_dir, model_dir = Path(out_dir), Path(model_dir)
    keys = match_base_keys(sorted(masks), list(base_all))
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, Any] = {}
    base_used: dict[str, torch.Tensor] = {}
    for name, value in tuned.items():
        keep = masks.get(name) if name in keys else None
        if keep is None:
            tensors[f"full/{name}"] = value.contiguous()
            entries[name] = {"kind": "full"}
            continue
        base = base_all[keys[name]]
        if base.shape != value.shape:
            raise ValueError(
                f"base: {keys[name]!r} has shape {list(base.shape)}, the model {list(value.shape)}"
            )
        base_used[keys[name]] = base
        keep = keep.reshape(-1)
        start = rounded_tensor(base, base_rounded_to)
        flat, old = value.reshape(-1), start.to(value.dtype).reshape(-1)
        outside = int((flat[~keep] != old[~keep]).sum())
        if outside:
            raise ValueError(
                f"delta: {outside} elements of {name!r} outside the child changed (weight decay, or a "
                "job without strict_child); only a strict child is a sparse change of the base"
            )
        tensors[f"mask/{name}"] = pack_bits(keep)
        tensors[f"child/{name}"] = flat[keep].contiguous()
        entries[name] = {
            "kind": "child",
            "base_key": keys[name],
            "shape": list(value.shape),
            "dtype": str(value.dtype).removeprefix("torch."),
            "kept": int(keep.sum()),
        }
    missing = sorted(set(masks) - set(tuned))
    if missing:
        raise ValueError(f"delta: the model has no weight for masked parameters {missing[:3]}")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in sorted(model_dir.iterdir()):
        if (
            path.is_file()
            and not path.name.endswith(_WEIGHT_SUFFIXES)
            and path.name != "model.safetensors.index.json"
        ):
            shutil.copy2(path, tmp / path.name)
    save_file(tensors, str(tmp / DELTA_TENSORS))
    model_bytes = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    info = {
        "format": FORMAT,
        "base_fingerprint": _fingerprint(base_used),
        "base_rounded_to": base_rounded_to if base_rounded_to != "fp32" else None,
        "params": entries,
        "delta_bytes": (tmp / DELTA_TENSORS).stat().st_size,
        "model_bytes": model_bytes,
    }
    (tmp / DELTA_JSON).write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return info


def apply_delta(
    base_model_dir: str | Path, delta_dir: str | Path, out_dir: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The fine-tuned weights, rebuilt bit-exactly from the base folder and a delta folder.

    With ``out_dir``, also write a Hugging Face folder there (``model.safetensors`` and the
    delta's config, tokenizer and card files) that ``from_pretrained`` loads."""
    delta_dir = Path(delta_dir)
    info = json.loads((delta_dir / DELTA_JSON).read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{delta_dir}: delta format {info.get('format')!r}, this version reads {FORMAT}")
    stored = load_file(str(delta_dir / DELTA_TENSORS))
    base_all = load_weights(base_model_dir)
    used = {
        e["base_key"]: base_all.get(e["base_key"]) for e in info["params"].values() if e["kind"] == "child"
    }
    absent = [k for k, v in used.items() if v is None]
    if absent or _fingerprint({k: v for k, v in used.items() if v is not None}) != info["base_fingerprint"]:
        raise ValueError(
            f"base: {base_model_dir} is not the base this delta was made from "
            f"({'missing ' + repr(absent[:3]) if absent else 'its weights differ'})"
        )
    out: dict[str, torch.Tensor] = {}
    for name, entry in info["params"].items():
        if entry["kind"] == "full":
            out[name] = stored[f"full/{name}"]
            continue
        base = used[entry["base_key"]]
        assert base is not None
        base = rounded_tensor(base, info.get("base_rounded_to"))
        flat = base.to(getattr(torch, entry["dtype"])).reshape(-1).clone()
        keep = unpack_bits(stored[f"mask/{name}"], flat.numel())
        flat[keep] = stored[f"child/{name}"]
        out[name] = flat.view(entry["shape"])
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(delta_dir.iterdir()):
            if path.is_file() and path.name not in (DELTA_JSON, DELTA_TENSORS):
                shutil.copy2(path, out_dir / path.name)
        save_file(out, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out
