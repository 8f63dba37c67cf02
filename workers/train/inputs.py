"""A job's splits as the model's inputs: token ids for a classifier or regressor
(:func:`workers.train.data.tokenize`), or, for causal-lm, rendered and labelled rows with
``dataset.overlong`` applied (:func:`workers.train.data.encode_sft`) and what became of them
(the ``data`` event).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.core.contract import JobSpec

if TYPE_CHECKING:
    from workers.train.data import SftDataset, Splits, TokenizedDataset

__all__ = ["Inputs", "encode_splits"]


@dataclass
class Inputs:
    train: TokenizedDataset | SftDataset
    eval: TokenizedDataset | SftDataset
    answer_tokens: int = 0  # causal-lm: the longest evaluation answer, in tokens
    data_event: dict[str, Any] = field(default_factory=dict)  # causal-lm: the ``data`` event's fields


def encode_splits(spec: JobSpec, splits: Splits, tokenizer: Any) -> Inputs:
    """Tokenize the training and evaluation splits (causal-lm: render, label, apply ``overlong``)."""
    from workers.train.data import tokenize

    max_len, task_type = spec.hyperparameters.max_seq_length, splits.info.task_type
    if splits.info.is_causal_lm:
        return _encode_sft(spec, splits, tokenizer)
    return Inputs(
        train=tokenize(splits.train, tokenizer, max_len, task_type=task_type),  # type: ignore[arg-type]
        eval=tokenize(splits.eval, tokenizer, max_len, task_type=task_type),  # type: ignore[arg-type]
    )


def _encode_sft(spec: JobSpec, splits: Splits, tokenizer: Any) -> Inputs:
    from workers.train.data import encode_sft
    from workers.train.data.sft import uses_chat_template

    data, max_len = spec.dataset, spec.hyperparameters.max_seq_length
    overlong = data.overlong or "truncate"
    sources = {
        "train": data.train_file or data.preset or "train",
        "eval": data.eval_file or data.preset or "eval",
    }
    counts: dict[str, Any] = {}
    encoded: dict[str, SftDataset] = {}
    for split, rows in (("train", splits.train), ("eval", splits.eval)):
        encoded[split], counted = encode_sft(
            rows,  # type: ignore[arg-type]
            tokenizer,
            max_len,
            overlong=overlong,
            chat_template=data.chat_template,
            source=str(sources[split]),
        )
        counts[split] = counted.to_dict()
    answers = tokenizer(list(encoded["eval"].references[:4096]), add_special_tokens=False)["input_ids"]
    return Inputs(
        train=encoded["train"],
        eval=encoded["eval"],
        answer_tokens=max((len(a) for a in answers), default=1),
        data_event={
            "overlong": overlong,
            "chat_template": uses_chat_template(tokenizer, data.chat_template),
            "max_seq_length": max_len,
            **counts,
        },
    )
