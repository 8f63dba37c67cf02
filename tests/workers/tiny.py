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
    import transformers
    from transformers import BertConfig, BertForSequenceClassification

    BertTokenizerFast = transformers.BertTokenizerFast  # type: ignore[attr-defined]

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


CHAT_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
# ChatML, as SmolLM2's template (without its default system turn).
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def char_tokenizer(*, chat: bool) -> object:
    """A character-level fast tokenizer (lower case) with ChatML's special tokens.

    ``chat``: a ChatML chat template, ``<|im_end|>`` as end of sequence and ``<pad>`` as pad
    (SmolLM2-like); else no template, ``</s>`` as end of sequence and no pad token (GPT-2-like).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_lowercase + string.digits + string.punctuation + " \n")
    vocab = {tok: i for i, tok in enumerate(CHAT_SPECIAL + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(CHAT_SPECIAL)
    if chat:
        return PreTrainedTokenizerFast(
            tokenizer_object=core,
            bos_token="<s>",
            eos_token="<|im_end|>",
            pad_token="<pad>",
            unk_token="<unk>",
            chat_template=CHATML,
        )
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", unk_token="<unk>")


def write_tiny_decoder(folder: Path, *, family: str = "llama", seed: int = 0) -> Path:
    """A 2-layer, hidden-16 random decoder and its character tokenizer, saved for ``from_pretrained``.

    ``family``: ``llama`` (``model.layers.N`` names, tied embeddings, a ChatML template, as
    SmolLM2) or ``gpt2`` (``transformer.h.N`` names, no chat template, no pad token). No dropout.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = char_tokenizer(chat=family == "llama")
    tokenizer.save_pretrained(str(folder))  # type: ignore[attr-defined]
    vocab = len(tokenizer)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    model: torch.nn.Module
    if family == "llama":
        llama = LlamaConfig(
            vocab_size=vocab,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            bos_token_id=CHAT_SPECIAL.index("<s>"),
            eos_token_id=CHAT_SPECIAL.index("<|im_end|>"),
            pad_token_id=CHAT_SPECIAL.index("<pad>"),
        )
        model = LlamaForCausalLM(llama)
    elif family == "gpt2":
        gpt2 = GPT2Config(
            vocab_size=vocab,
            n_embd=16,
            n_layer=2,
            n_head=2,
            n_positions=512,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=CHAT_SPECIAL.index("</s>"),
            eos_token_id=CHAT_SPECIAL.index("</s>"),
        )
        model = GPT2LMHeadModel(gpt2)
    else:
        raise ValueError(f"unknown family {family!r}")
    model.save_pretrained(str(folder))
    return folder
