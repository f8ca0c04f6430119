"""Logit effects of decoder directions against a direct computation, and the head's checks."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import tiny_vit
from vitsae.analysis.logits import (
    LOGIT_EFFECTS_FILE,
    LogitEffects,
    logit_effects,
    model_logit_effects,
    unembedding,
)
from vitsae.models import HookedViT, HookedViTConfig


def test_effects_are_the_top_and_bottom_classes_of_w_dec_times_the_head():
    W_dec_FD = torch.randn(37, 8, dtype=torch.float64)
    W_U_DC = torch.randn(8, 11, dtype=torch.float64)
    effects = logit_effects(W_dec_FD, W_U_DC, k=3, chunk=5)
    full = W_dec_FD @ W_U_DC
    order = torch.argsort(full, dim=1, descending=True)
    assert torch.equal(effects.up_class_Fk, order[:, :3])
    assert torch.equal(effects.down_class_Fk, order.flip(1)[:, :3])
    torch.testing.assert_close(effects.up_value_Fk, torch.gather(full, 1, order[:, :3]).float())


def test_unembedding_folds_in_the_final_norm_scale():
    model = tiny_vit()
    expected = model.ln_final.w.detach()[:, None] * model.W_U.detach()
    torch.testing.assert_close(unembedding(model), expected)
    # the direct effect is exactly the logit change when the norm's division is held fixed
    resid = torch.randn(32)
    direction = torch.randn(32)
    mean_free = resid - resid.mean()
    scale = mean_free.pow(2).mean().add(model.ln_final.eps).sqrt()

    def logits_at_fixed_scale(x):
        return ((x - x.mean()) / scale * model.ln_final.w + model.ln_final.b) @ model.W_U + model.b_U

    change = logits_at_fixed_scale(resid + direction) - logits_at_fixed_scale(resid)
    centred = direction - direction.mean()
    torch.testing.assert_close(change.detach() * scale, centred @ unembedding(model), rtol=1e-4, atol=1e-5)


def test_models_without_a_linear_head_are_refused():
    headless = HookedViT(
        HookedViTConfig(
            d_model=16, n_layers=1, n_heads=2, d_mlp=32, image_size=(16, 16), patch_size=8, head_out=0
        )
    )
    with pytest.raises(ValueError, match="no classification head W_U"):
        unembedding(headless)
    with pytest.raises(ValueError, match=r"width 8 \(W_dec \(4, 8\)\).*expects 6 \(W_U \(6, 3\)\)"):
        logit_effects(torch.zeros(4, 8), torch.zeros(6, 3))


def test_saved_effects_load_back_identically_and_a_foreign_file_is_refused(tmp_path):
    effects = logit_effects(torch.randn(9, 8), torch.randn(8, 4), k=3)
    assert LogitEffects.load(tmp_path) is None
    effects.save(tmp_path)
    loaded = LogitEffects.load(tmp_path)
    for name in ("up_class_Fk", "up_value_Fk", "down_class_Fk", "down_value_Fk"):
        assert torch.equal(getattr(loaded, name), getattr(effects, name)), name
    save_file({"x": torch.zeros(1)}, str(tmp_path / LOGIT_EFFECTS_FILE), metadata={"format": "other"})
    with pytest.raises(ValueError, match="format 'other'.*rerun `vitsae stats`"):
        LogitEffects.load(tmp_path)


def test_model_logit_effects_gives_the_reason_when_there_are_none():
    W_dec_FD = torch.randn(6, 32)
    effects, why_not = model_logit_effects("module:tests.helpers:tiny_vit", W_dec_FD, k=2)
    assert why_not == "" and effects.up_class_Fk.shape == (6, 2)
    effects, why_not = model_logit_effects("module:nowhere:nothing", W_dec_FD, explicit=False)
    assert effects is None and "could not be loaded" in why_not
    with pytest.raises(ValueError, match="cannot find factory"):
        model_logit_effects("module:nowhere:nothing", W_dec_FD)
