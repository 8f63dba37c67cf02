"""A tiny random BERT saved as a Hugging Face folder, with a character-level WordPiece tokenizer.

Every word splits into known characters, so real GLUE text becomes real token ids (no [UNK]
soup) and the model has something to learn, while a training step takes milliseconds.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = list(string.ascii_lowercase + string.digits + string.punctuation)


def write_tiny_model(folder: Path, *, dropout: float = 0.0, seed: int = 0) -> Path:
    """Write ``config.json``, weights and tokenizer files of a 2-layer, hidden-16 BERT into ``folder``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + CHARS + ["##" + c for c in CHARS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder
