"""Datasets for a job: GLUE presets and user files, validated row by row before training.

One module per concern (each imports only those above it; none imports torch or transformers
at import time):

- ``base``: the shared types: :class:`DatasetError`, :class:`Example`, :class:`DatasetInfo`
  (alias :data:`TaskInfo`), :class:`Splits`.
- ``presets``: the GLUE presets (:data:`PRESET_TASKS`: folder, encoding, columns, labels) and
  where their files live (:func:`data_root`, ``$CHILDTUNE_DATA``: ``service.core.env.DATA``).
- ``rows``: one file's text and records, and a row's text and label cells, each checked; errors
  name the file (an upload by its id), the line and the reason.
- ``files``: a preset's or the user's files into examples, mapping columns and labels
  (:func:`load_examples`, :func:`load_splits`, :func:`resolve_file`).
- ``encoding``: examples into model inputs (:func:`tokenize`, :class:`TokenizedDataset`).
- ``sft``: causal-lm rows into token ids with loss labels (:func:`encode_sft`,
  :class:`SftDataset`, :class:`SftCounts`).
- ``sampling``: each epoch's shuffled order and each rank's share of the batches
  (:func:`epoch_permutation`, :func:`shard_indices`, :func:`num_global_batches`,
  :func:`eval_shard`).

Import the names from this package (``from workers.train.data import load_splits``).
"""

from __future__ import annotations

from workers.train.data.base import DatasetError, DatasetInfo, Example, SftRow, Splits, TaskInfo
from workers.train.data.encoding import TokenizedDataset, tokenize
from workers.train.data.files import load_examples, load_splits, resolve_file
from workers.train.data.presets import PRESET_TASKS, data_root
from workers.train.data.sampling import epoch_permutation, eval_shard, num_global_batches, shard_indices
from workers.train.data.sft import IGNORE_INDEX, SftCounts, SftDataset, encode_sft

__all__ = [
    "IGNORE_INDEX",
    "PRESET_TASKS",
    "DatasetError",
    "DatasetInfo",
    "Example",
    "SftCounts",
    "SftDataset",
    "SftRow",
    "Splits",
    "TaskInfo",
    "TokenizedDataset",
    "data_root",
    "encode_sft",
    "epoch_permutation",
    "eval_shard",
    "load_examples",
    "load_splits",
    "num_global_batches",
    "resolve_file",
    "shard_indices",
    "tokenize",
]
