import pytest
import torch
from torch import nn

from childtuning import ChildTuning, ChildTuningConfig


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"reserve_p": 0.0}, "reserve_p"),
        ({"reserve_p": -0.1}, "reserve_p"),
        ({"reserve_p": 1.5}, "reserve_p"),
        ({"reserve_p": "0.3"}, "reserve_p"),
        ({"mode": "childtuning-x"}, "mode"),
        ({"fisher_num_batches": 0}, "fisher_num_batches"),
        ({"fisher_clip_norm": -1.0}, "fisher_clip_norm"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        ChildTuningConfig(**kwargs)


def test_unknown_mode_lists_allowed_modes():
    with pytest.raises(ValueError, match="vanilla, childtuning-d, childtuning-f, update-dropout"):
        ChildTuningConfig(mode="d")


def test_filter_matching_nothing_is_an_error():
    model = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"param_filter: \['layer', .*\] matches no trainable parameter"):
        ChildTuning(model, ChildTuningConfig(mode="childtuning-d"))


def test_mode_defaults_follow_the_official_code():
    d = ChildTuningConfig(mode="childtuning-d")
    f = ChildTuningConfig(mode="childtuning-f", reserve_p=0.25)
    assert (d.effective_filter, d.effective_rescale, d.scale) == (["layer", r"(?:^|\.)h\.\d+\."], False, 1.0)
    assert (f.effective_filter, f.effective_rescale, f.scale) == ("", True, 4.0)
    assert ChildTuningConfig(mode="childtuning-d", rescale=True, reserve_p=0.5).scale == 2.0


def test_the_default_d_filter_is_the_official_layer_filter_plus_gpt2_blocks():
    d = ChildTuningConfig(mode="childtuning-d")
    assert d.selects("bert.encoder.layer.0.attention.self.query.weight")
    assert d.selects("model.layers.11.self_attn.q_proj.weight")  # Llama
    assert d.selects("transformer.h.3.attn.c_attn.weight")  # GPT-2
    for outside in (
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "lm_head.weight",
    ):
        assert not d.selects(outside), outside
    for outside in (
        "model.embed_tokens.weight",
        "model.norm.weight",
        "transformer.wte.weight",
        "transformer.ln_f.bias",
    ):
        assert not d.selects(outside), outside


def test_d_attach_without_mask_is_refused():
    model = nn.Sequential()
    model.add_module("layer", nn.Linear(3, 3))
    ct = ChildTuning(model, ChildTuningConfig(mode="childtuning-d"))
    with pytest.raises(RuntimeError, match="compute_fisher"):
        ct.attach(torch.optim.SGD(model.parameters(), lr=0.1))


def test_fused_refused_for_unsupported_optimizer():
    model = nn.Sequential(nn.Linear(3, 3))
    ct = ChildTuning(model, ChildTuningConfig(mode="childtuning-f", fused=True))
    with pytest.raises(ValueError, match=r"^fused: .*SGD is not AdamW"):
        ct.attach(torch.optim.SGD(model.parameters(), lr=0.1))
