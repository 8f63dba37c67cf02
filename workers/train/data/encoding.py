"""Tokenisation: examples into a :class:`TokenizedDataset` of per-example token ids.

:func:`tokenize` runs a Hugging Face tokenizer over :class:`~workers.train.data.base.Example`
lists (pairs as pairs); :meth:`TokenizedDataset.collate` pads each batch to its longest example.
torch is imported inside the functions, never at import time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from workers.train.data.base import Example

if TYPE_CHECKING:
    import torch


class TokenizedDataset:
    """Token ids of every example, stored flat; batches are padded to their longest example.

    A map-style dataset (``len`` and integer indexing) usable with ``torch.utils.data.DataLoader``
    and :meth:`collate`, or directly through :meth:`batch`.
    """

    def __init__(
        self,
        input_ids: Sequence[Sequence[int]],
        token_type_ids: Sequence[Sequence[int]] | None,
        labels: Sequence[int | float],
        *,
        regression: bool,
        pad_token_id: int,
    ) -> None:
        import torch

        if len(input_ids) != len(labels):
            raise ValueError("input_ids and labels differ in length")
        lengths = torch.tensor([len(ids) for ids in input_ids], dtype=torch.long)
        self.offsets = torch.zeros(len(input_ids) + 1, dtype=torch.long)
        if len(input_ids):
            torch.cumsum(lengths, dim=0, out=self.offsets[1:])
        self.lengths = lengths
        self.input_ids = torch.tensor([t for ids in input_ids for t in ids], dtype=torch.long)
        self.token_type_ids = (
            torch.tensor([t for ids in token_type_ids for t in ids], dtype=torch.long)
            if token_type_ids is not None
            else None
        )
        self.labels = torch.tensor(list(labels), dtype=torch.float32 if regression else torch.long)
        self.regression = regression
        self.pad_token_id = int(pad_token_id)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        import torch

        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        item = {
            "input_ids": self.input_ids[start:end],
            "attention_mask": torch.ones(end - start, dtype=torch.long),
            "labels": self.labels[index],
        }
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[start:end]
        return item

    def collate(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stack items into a batch, right-padding to the longest (pad id, attention 0, type 0)."""
        import torch

        if not items:
            raise ValueError("cannot collate an empty batch")
        width = max(int(item["input_ids"].shape[0]) for item in items)
        n = len(items)
        batch = {
            "input_ids": torch.full((n, width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((n, width), dtype=torch.long),
        }
        has_types = "token_type_ids" in items[0]
        if has_types:
            batch["token_type_ids"] = torch.zeros((n, width), dtype=torch.long)
        for row, item in enumerate(items):
            size = int(item["input_ids"].shape[0])
            batch["input_ids"][row, :size] = item["input_ids"]
            batch["attention_mask"][row, :size] = 1
            if has_types:
                batch["token_type_ids"][row, :size] = item["token_type_ids"]
        batch["labels"] = torch.stack([item["labels"] for item in items])
        return batch

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The padded batch of the given example indices."""
        return self.collate([self[int(i)] for i in indices])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every example as one batch (padded to the longest): input_ids, attention_mask, ..."""
        return self.batch(range(len(self)))


def tokenize(
    examples: Sequence[Example],
    tokenizer: Any,
    max_seq_length: int,
    *,
    task_type: str | None = None,
    chunk_size: int = 2048,
) -> TokenizedDataset:
    """Tokenise examples (pairs as pairs) with a Hugging Face tokenizer, truncating to ``max_seq_length``.

    The result holds ``input_ids``, ``attention_mask``, ``token_type_ids`` when the tokenizer
    produces them, and ``labels`` (int64 for classification, float32 for regression). The task
    type is taken from ``task_type`` or, when None, from the labels' Python type.
    """
    if max_seq_length < 2:
        raise ValueError(f"max_seq_length must be >= 2 (got {max_seq_length})")
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError("the tokenizer has no pad token (pad_token_id is None); set one before tokenising")
    if task_type is None:
        regression = bool(examples) and isinstance(examples[0].label, float)
    else:
        regression = task_type == "regression"
    pairs = [ex.text_pair is not None for ex in examples]
    if any(pairs) and not all(pairs):
        raise ValueError("either every example has a text pair or none has")
    with_pairs = bool(pairs) and pairs[0]
    ids: list[list[int]] = []
    types: list[list[int]] | None = []
    for start in range(0, len(examples), chunk_size):
        chunk = examples[start : start + chunk_size]
        encoded = tokenizer(
            [ex.text for ex in chunk],
            [ex.text_pair or "" for ex in chunk] if with_pairs else None,
            truncation=True,
            max_length=max_seq_length,
            padding=False,
            return_attention_mask=False,
        )
        ids.extend(list(x) for x in encoded["input_ids"])
        if types is not None:
            if "token_type_ids" in encoded:
                types.extend(list(x) for x in encoded["token_type_ids"])
            else:
                types = None
    labels: list[int | float] = [float(ex.label) if regression else int(ex.label) for ex in examples]
    return TokenizedDataset(ids, types, labels, regression=regression, pad_token_id=pad)
