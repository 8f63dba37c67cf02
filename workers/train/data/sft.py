"""Causal-lm rows into token ids with loss labels: what a decoder is trained and scored on.

A row (:class:`~service.core.datasets.SftRow`) is rendered into *segments* of text, each
trained or not:

- ``prompt``/``completion`` with the chat template (``dataset.chat_template`` true, or null and
  the tokenizer has one): a user turn holding the prompt, then an assistant turn holding the
  completion, exactly as ``messages`` rows are rendered below.
- ``prompt``/``completion`` without it: the tokenizer's beginning-of-sequence token (when it
  adds one), the prompt, then the completion followed by the end-of-sequence token.
- ``messages``: the tokenizer's chat template renders the conversation; for each assistant turn
  the text that ``messages[:i]`` with the generation prompt leaves off and ``messages[:i+1]``
  adds (the assistant's content and the template's end-of-turn) is trained, the rest is not.
  A template whose renderings are not prefixes of each other is refused (the loss mask could
  not be placed).

Segments are tokenised one by one (``add_special_tokens=False``) and concatenated, so a token
never straddles a prompt and its completion. Labels are the token ids on trained tokens and
``-100`` elsewhere; the loss of a batch counts only trained tokens (``workers.train.losses``).

Rows longer than ``max_seq_length`` tokens follow ``dataset.overlong`` (truncate, drop, fail);
what happened to every row is counted in :class:`SftCounts`. torch is imported inside the
functions, never at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.core.datasets import SftRow
from workers.train.data.base import DatasetError

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # the label of a token that is not trained (torch's cross-entropy default)


@dataclass
class SftCounts:
    """What became of a split's rows: kept as they are, truncated, or left out (and why)."""

    rows: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_overlong: int = 0  # overlong = drop
    dropped_no_target: int = 0  # overlong = truncate left no completion token
    target_tokens: int = 0
    first_dropped_lines: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "kept": self.kept,
            "truncated": self.truncated,
            "dropped_overlong": self.dropped_overlong,
            "dropped_no_target": self.dropped_no_target,
            "target_tokens": self.target_tokens,
            "first_dropped_lines": list(self.first_dropped_lines),
        }


def uses_chat_template(tokenizer: Any, chat_template: bool | None) -> bool:
    """Whether rows are rendered with the tokenizer's chat template (``dataset.chat_template``)."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat_template and not has:
        raise DatasetError(
            "dataset.chat_template: the model's tokenizer has no chat template; set chat_template to "
            "false (plain prompt + completion) or use a model with one"
        )
    return has if chat_template is None else chat_template


def _adds_bos(tokenizer: Any) -> list[int]:
    """``[bos]`` when the tokenizer puts a beginning-of-sequence token in front of text, else ``[]``."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [int(bos)] if ids and ids[0] == bos else []


def _chat_segments(row: SftRow, tokenizer: Any, where: str) -> list[tuple[str, bool]]:
    messages: list[dict[str, str]] = (
        [{"role": r, "content": c} for r, c in row.messages]
        if row.messages
        else [{"role": "user", "content": row.prompt or ""}, {"role": "assistant", "content": row.reference}]
    )

    def render(upto: int, generation_prompt: bool) -> str:
        try:
            text = tokenizer.apply_chat_template(
                messages[:upto], tokenize=False, add_generation_prompt=generation_prompt
            )
        except Exception as exc:
            raise DatasetError(
                f"{where}: the chat template cannot render this conversation ({exc})"
            ) from None
        return str(text)

    full = render(len(messages), False)
    segments: list[tuple[str, bool]] = []
    pos = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, after = render(i, True), render(i + 1, False)
        if not (after.startswith(before) and full.startswith(after) and len(before) >= pos):
            raise DatasetError(
                f"{where}: the chat template renders a conversation differently from its beginning, so "
                "the assistant turns cannot be located; use prompt/completion rows with chat_template "
                "false, or a model with a ChatML-like template"
            )
        segments.append((full[pos : len(before)], False))
        segments.append((full[len(before) : len(after)], True))
        pos = len(after)
    if pos < len(full):
        segments.append((full[pos:], False))
    return segments


def encode_row(row: SftRow, tokenizer: Any, use_chat: bool, where: str) -> tuple[list[int], list[int], int]:
    """``(input_ids, labels, prompt_length)`` of one row; the first ``prompt_length`` ids are the
    prompt of its last answer (what generation starts from)."""
    if use_chat:
        segments = _chat_segments(row, tokenizer, where)
        ids: list[int] = []
    elif row.messages:
        raise DatasetError(
            f"{where}: a chat row needs a tokenizer with a chat template (dataset.chat_template is false, "
            "or the model has none); give prompt/completion rows instead"
        )
    else:
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise DatasetError("model: the tokenizer has no end-of-sequence token to end completions with")
        segments = [(row.prompt or "", False), (row.completion or "", True)]
        ids = _adds_bos(tokenizer)
    labels = [IGNORE_INDEX] * len(ids)
    prompt_length = 0
    for text, trained in segments:
        if not text:
            continue
        if trained:
            prompt_length = len(ids)
        part = [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
        ids += part
        labels += part if trained else [IGNORE_INDEX] * len(part)
    if not use_chat:
        ids.append(int(tokenizer.eos_token_id))
        labels.append(int(tokenizer.eos_token_id))
    return ids, labels, prompt_length


class SftDataset:
    """Token ids, labels and generation prompts of causal-lm rows, stored flat.

    :meth:`batch` pads right (pad id, attention 0, label -100); :meth:`generation_batch` pads
    the prompts left, as decoder generation needs."""

    def __init__(
        self,
        input_ids: Sequence[Sequence[int]],
        labels: Sequence[Sequence[int]],
        prompt_lengths: Sequence[int],
        rows: Sequence[SftRow],
        *,
        pad_token_id: int,
    ) -> None:
        import torch

        self.lengths = torch.tensor([len(x) for x in input_ids], dtype=torch.long)
        self.offsets = torch.zeros(len(input_ids) + 1, dtype=torch.long)
        if len(input_ids):
            torch.cumsum(self.lengths, dim=0, out=self.offsets[1:])
        self.input_ids = torch.tensor([t for x in input_ids for t in x], dtype=torch.long)
        self.labels = torch.tensor([t for x in labels for t in x], dtype=torch.long)
        self.prompt_lengths = list(prompt_lengths)
        self.references = [row.reference for row in rows]
        self.questions = [row.question for row in rows]
        self.lines = [row.line for row in rows]
        self.pad_token_id = int(pad_token_id)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def _ids(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.input_ids[start:end], self.labels[start:end]

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Rows ``indices`` right-padded to the longest: input_ids, attention_mask, labels."""
        import torch

        if not indices:
            raise ValueError("cannot collate an empty batch")
        width = max(int(self.lengths[i]) for i in indices)
        n = len(indices)
        out = {
            "input_ids": torch.full((n, width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((n, width), dtype=torch.long),
            "labels": torch.full((n, width), IGNORE_INDEX, dtype=torch.long),
        }
        for row, index in enumerate(indices):
            ids, labels = self._ids(int(index))
            out["input_ids"][row, : len(ids)] = ids
            out["attention_mask"][row, : len(ids)] = 1
            out["labels"][row, : len(ids)] = labels
        return out

    def generation_batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The prompts of rows ``indices`` left-padded to the longest: input_ids, attention_mask."""
        import torch

        prompts = [self._ids(int(i))[0][: self.prompt_lengths[int(i)]] for i in indices]
        width = max(1, *(len(p) for p in prompts))
        n = len(prompts)
        out = {
            "input_ids": torch.full((n, width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((n, width), dtype=torch.long),
        }
        for row, prompt in enumerate(prompts):
            if len(prompt):
                out["input_ids"][row, width - len(prompt) :] = prompt
                out["attention_mask"][row, width - len(prompt) :] = 1
        return out


def encode_sft(
    rows: Sequence[SftRow],
    tokenizer: Any,
    max_seq_length: int,
    *,
    overlong: str,
    chat_template: bool | None,
    source: str,
) -> tuple[SftDataset, SftCounts]:
    """Encode a split's rows, applying ``overlong`` (truncate, drop, fail) at ``max_seq_length``.

    ``source`` names the file in errors. Raises :class:`DatasetError` when a row cannot be
    rendered, when ``overlong`` is ``fail`` and a row is too long, or when no row is left."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError("the tokenizer has no pad token (pad_token_id is None); set one before encoding")
    use_chat = uses_chat_template(tokenizer, chat_template)
    counts = SftCounts(rows=len(rows))
    kept_ids: list[list[int]] = []
    kept_labels: list[list[int]] = []
    kept_prompts: list[int] = []
    kept_rows: list[SftRow] = []

    def dropped(line: int) -> None:
        if len(counts.first_dropped_lines) < 10:
            counts.first_dropped_lines.append(line)

    for row in rows:
        where = f"{source}: line {row.line}"
        ids, labels, prompt_length = encode_row(row, tokenizer, use_chat, where)
        if len(ids) > max_seq_length:
            if overlong == "fail":
                raise DatasetError(
                    f"{where}: {len(ids)} tokens, more than hyperparameters.max_seq_length "
                    f"({max_seq_length}); raise max_seq_length, or set dataset.overlong to truncate or drop"
                )
            if overlong == "drop":
                counts.dropped_overlong += 1
                dropped(row.line)
                continue
            ids, labels = ids[:max_seq_length], labels[:max_seq_length]
            if all(label == IGNORE_INDEX for label in labels[1:]):
                counts.dropped_no_target += 1
                dropped(row.line)
                continue
            counts.truncated += 1
        elif all(label == IGNORE_INDEX for label in labels[1:]):
            raise DatasetError(f"{where}: the row renders to no trained token")
        kept_ids.append(ids)
        kept_labels.append(labels)
        kept_prompts.append(min(prompt_length, len(ids)))
        kept_rows.append(row)
        counts.target_tokens += sum(1 for label in labels[1:] if label != IGNORE_INDEX)
    counts.kept = len(kept_rows)
    if not kept_rows:
        raise DatasetError(
            f"{source}: every row is longer than hyperparameters.max_seq_length ({max_seq_length}) "
            f"tokens and was dropped (dataset.overlong {overlong}); raise max_seq_length"
        )
    return SftDataset(kept_ids, kept_labels, kept_prompts, kept_rows, pad_token_id=int(pad)), counts
