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
    with pytest.raises(ValueError, match="param_filter: 'layer' matches no trainable parameter"):
        ChildTuning(model, ChildTuningConfig(mode="childtuning-d"))


def test_mode_defaults_follow_the_official_code():
    d = ChildTuningConfig(mode="childtuning-d")
    f = ChildTuningConfig(mode="childtuning-f", reserve_p=0.25)
    assert (d.effective_filter, d.effective_rescale, d.scale) == ("layer", False, 1.0)
    assert (f.effective_filter, f.effective_rescale, f.scale) == ("", True, 4.0)
    assert ChildTuningConfig(mode="childtuning-d", rescale=True, reserve_p=0.5).scale == 2.0


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
