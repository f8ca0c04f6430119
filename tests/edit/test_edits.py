"""Feature edits: delta semantics, no-op edits bit for bit, where they apply, units, composition, JSON."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.edit.conftest import VIT_HOOKS
from tests.helpers import random_sae
from vitsae.edit import FeatureEdit, SpliceSite, Where, spliced
from vitsae.edit.edits import EditError, edits_from_json, edits_to_json
from vitsae.edit.where import SelectionError, box_patch_mask
from vitsae.fileio import write_json_atomic
from vitsae.tokens import TokenLayout

HOOK = VIT_HOOKS[0]


@pytest.fixture
def sae():
    return random_sae(32, HOOK)


def _codes(vit, sae, pixels):
    x_BTD = vit.collect(pixels, [HOOK])[HOOK]
    return x_BTD, sae.encode(x_BTD.reshape(-1, 32)).reshape(*x_BTD.shape[:2], -1)


def _hook_output(vit, pixels, sae, edits, **kwargs):
    with torch.no_grad(), spliced(vit, [SpliceSite(sae)], edits=edits, **kwargs) as splice:
        logits, cache = vit.run_with_cache(pixels, names_filter=[HOOK])
    return logits, cache[HOOK], splice


@pytest.mark.parametrize("backend", ["dense", "sparse"])
@pytest.mark.parametrize("grad", [False, True])
def test_edits_of_a_silent_feature_change_nothing_bit_for_bit(vit, pixels, sae, grad, backend):
    sae.with_config(backend=backend)
    _, codes = _codes(vit, sae, pixels)
    silent = int((codes != 0).sum((0, 1)).argmin())
    assert (codes[..., silent] == 0).all()
    firing = int((codes != 0).sum((0, 1)).argmax())
    no_ops = [
        FeatureEdit("ablate", (silent,)),
        FeatureEdit("clamp", (silent,), value=3.0, only_firing=True),
        FeatureEdit("scale", (silent,), value=5.0),
        FeatureEdit("patch", (silent,), donor=0),
    ]
    with torch.set_grad_enabled(grad):
        with spliced(vit, [sae]):
            reference = vit(pixels)
        for edit in no_ops:
            with spliced(vit, [sae], edits=[edit], donor_pixels=pixels) as splice:
                assert torch.equal(vit(pixels), reference), edit
            assert not splice.changed_B().any()
        with spliced(vit, [sae], edits=[FeatureEdit("ablate", (firing,))]) as splice:
            assert not torch.equal(vit(pixels), reference)
        assert splice.changed_B().any()


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_ablation_writes_x_plus_the_decoded_difference(vit, pixels, sae, backend):
    sae.with_config(backend=backend)
    x_BTD, codes = _codes(vit, sae, pixels)
    feature = int((codes != 0).sum((0, 1)).argmax())
    edited = codes.clone()
    edited[..., feature] = 0
    expected = x_BTD + sae.decode(edited) - sae.decode(codes)
    _, out, _ = _hook_output(vit, pixels, sae, [FeatureEdit("ablate", (feature,))])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_steer_adds_the_decoder_row_where_asked(vit, pixels, sae):
    x_BTD, _ = _codes(vit, sae, pixels)
    row = sae.W_dec[9].detach() / sae.cfg.norm_scale
    _, out, _ = _hook_output(
        vit, pixels, sae, [FeatureEdit("steer", (9,), value=2.0, where={"tokens": "cls"})]
    )
    torch.testing.assert_close(out[:, 0], x_BTD[:, 0] + 2.0 * row, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 1:], x_BTD[:, 1:], rtol=1e-5, atol=1e-5)


def test_box_and_mask_select_the_same_patches(vit, pixels, sae):
    layout = vit.token_layout(HOOK)
    box_mask = box_patch_mask(layout, (8.0, 0.0, 24.0, 10.0), (32, 32))  # centres x in {12, 20}, y in {4}
    assert box_mask.nonzero().tolist() == [[0, 1], [0, 2]]
    mask = tuple(tuple(bool(v) for v in row) for row in box_mask.tolist())
    by_box = FeatureEdit("clamp", (3, 4), value=1.5, where={"tokens": "patches", "box": (8, 0, 24, 10)})
    by_mask = FeatureEdit("clamp", (3, 4), value=1.5, where={"tokens": "patches", "patch_mask": mask})
    x_BTD, _ = _codes(vit, sae, pixels)
    _, out_box, _ = _hook_output(vit, pixels, sae, [by_box])
    _, out_mask, _ = _hook_output(vit, pixels, sae, [by_mask])
    assert torch.equal(out_box, out_mask)
    moved = (out_box - x_BTD).abs().amax((0, 2)) > 1e-4
    assert moved.nonzero().squeeze(1).tolist() == [3 + 1, 3 + 2]


def test_clamp_only_where_firing(vit, pixels, sae):
    _, codes = _codes(vit, sae, pixels)
    feature = int((codes != 0).sum((0, 1)).argmax())
    seen = {}

    def keep(acts, hook):
        seen["acts"] = acts

    for only in (True, False):
        edit = FeatureEdit("clamp", (feature,), value=7.0, only_firing=only)
        with torch.no_grad(), spliced(vit, [sae], edits=[edit]):
            vit.run_with_hooks(pixels, fwd_hooks=[(f"{HOOK}.hook_sae_acts", keep)])
        got = seen["acts"][..., feature]
        fired = codes[..., feature] != 0
        assert (got[fired] == 7.0).all()
        assert (got[~fired] == (0.0 if only else 7.0)).all()


def test_patch_takes_the_donor_value(vit, pixels, sae):
    donor = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    _, donor_codes = _codes(vit, sae, donor)
    _, codes = _codes(vit, sae, pixels)
    feature = int((donor_codes != 0).sum((0, 1)).argmax())
    seen = {}

    def keep(acts, hook):
        seen["acts"] = acts

    with (
        torch.no_grad(),
        spliced(vit, [sae], edits=[FeatureEdit("patch", (feature,), donor=0)], donor_pixels=donor),
    ):
        vit.run_with_hooks(pixels, fwd_hooks=[(f"{HOOK}.hook_sae_acts", keep)])
    torch.testing.assert_close(seen["acts"][..., feature], donor_codes[..., feature].expand(3, -1))
    other = (feature + 1) % 128
    torch.testing.assert_close(seen["acts"][..., other], codes[..., other])


def test_edits_compose_in_order(vit, pixels, sae):
    twice = [FeatureEdit("scale", (1, 2), value=2.0), FeatureEdit("scale", (2,), value=3.0)]
    once = [FeatureEdit("scale", (1,), value=2.0), FeatureEdit("scale", (2,), value=6.0)]
    ablate_then_steer = [FeatureEdit("ablate", (5,)), FeatureEdit("steer", (5,), value=1.0)]
    clamp = [FeatureEdit("clamp", (5,), value=1.0)]
    for a, b in ((twice, once), (ablate_then_steer, clamp)):
        torch.testing.assert_close(_hook_output(vit, pixels, sae, a)[0], _hook_output(vit, pixels, sae, b)[0])


def test_units_from_statistics(vit, pixels, sae, tmp_path):
    n = sae.cfg.d_sae
    max_F = torch.arange(n, dtype=torch.float32) + 1
    sample_FS = torch.arange(n * 5, dtype=torch.float32).reshape(n, 5)
    images_FS = torch.zeros(n, 5, dtype=torch.int64)
    images_FS[:, 4] = -1  # an unused slot
    save_file(
        {"max_act_F": max_F, "sample_value_FS": sample_FS, "sample_image_FS": images_FS},
        str(tmp_path / "feature_stats.safetensors"),
    )
    write_json_atomic(tmp_path / "feature_stats.json", {"format": "vitsae.feature_stats", "n_features": n})
    x_BTD, _ = _codes(vit, sae, pixels)
    row = sae.W_dec[10].detach() / sae.cfg.norm_scale
    for unit, expected in (("max", 11.0 * 0.5), ("quantile", 51.5 * 0.5)):
        edit = FeatureEdit("steer", (10,), value=0.5, unit=unit, quantile=0.5, where={"tokens": "cls"})
        with torch.no_grad(), spliced(vit, [SpliceSite(sae, stats_dir=tmp_path)], edits=[edit]):
            _, cache = vit.run_with_cache(pixels, names_filter=[HOOK])
        torch.testing.assert_close(cache[HOOK][:, 0], x_BTD[:, 0] + expected * row, rtol=1e-5, atol=1e-5)
    with pytest.raises(EditError, match="needs the SAE's `vitsae stats` folder"):
        with spliced(vit, [sae], edits=[FeatureEdit("clamp", (1,), value=1.0, unit="max")]):
            pass
    write_json_atomic(tmp_path / "feature_stats.json", {"format": "vitsae.feature_stats", "n_features": 3})
    with pytest.raises(EditError, match="statistics of 3 features, but the SAE has 128"):
        with spliced(
            vit, [SpliceSite(sae, stats_dir=tmp_path)], edits=[FeatureEdit("clamp", (1,), unit="max")]
        ):
            pass


def test_edits_round_trip_through_json():
    edits = [
        FeatureEdit("ablate", (1, 2)),
        FeatureEdit("clamp", (3,), value=2.5, unit="quantile", quantile=0.9, only_firing=True, hook_name="h"),
        FeatureEdit("steer", (4,), value=-1.0, where=Where("patches", box=(0.0, 0.0, 8.0, 8.0))),
        FeatureEdit("patch", (5,), donor=2, where={"tokens": "patches", "patch_mask": ((True, False),)}),
    ]
    text = json.dumps(edits_to_json(edits))
    assert edits_from_json(json.loads(text)) == edits


def test_bad_edits_are_clear_errors():
    with pytest.raises(EditError, match="unknown edit 'delete'; valid: ablate, clamp, scale, steer, patch"):
        FeatureEdit("delete", (1,))
    with pytest.raises(EditError, match="at least one feature"):
        FeatureEdit("ablate", ())
    with pytest.raises(SelectionError, match="unknown token kind 'tokens'"):
        Where("tokens")
    with pytest.raises(SelectionError, match="needs patch tokens"):
        Where("cls", box=(0, 0, 1, 1))
    with pytest.raises(SelectionError, match="covers no patch centre"):
        box_patch_mask(TokenLayout(1, 0, (4, 4), 8), (0, 0, 1, 1), (16, 16))
    with pytest.raises(EditError, match="cannot read an edit"):
        FeatureEdit.from_dict({"op": "ablate", "features": [1], "colour": "red"})
