"""Splicing SAEs into a ViT and a CNN: equality with the error term, hook points, gradients, bad input."""

from __future__ import annotations

import pytest
import torch

from tests.edit.conftest import CNN_HOOK, VIT_HOOKS, edit_vit
from tests.helpers import random_sae, small_cnn
from vitsae.edit import FeatureEdit, SpliceError, SpliceSite, spliced
from vitsae.edit.edits import EditError
from vitsae.edit.where import SelectionError
from vitsae.fileio import write_json_atomic


def _vit_sites(model, dtype=torch.float32):
    return [
        SpliceSite(random_sae(32, VIT_HOOKS[0], seed=1).to(dtype), tokens="patches"),
        SpliceSite(random_sae(32, VIT_HOOKS[1], seed=2).to(dtype)),
    ]


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_error_term_keeps_the_outputs(kind, dtype, rtol, pixels):
    model = (edit_vit() if kind == "vit" else small_cnn()).to(dtype)
    sites = _vit_sites(model, dtype) if kind == "vit" else [SpliceSite(random_sae(12, CNN_HOOK).to(dtype))]
    x = pixels.to(dtype)
    with torch.no_grad():
        plain = model(x)
        with spliced(model, sites, error_term=True):
            kept = model(x)
        with spliced(model, sites, error_term=False):
            replaced = model(x)
    scale = plain.abs().max()
    assert (kept - plain).abs().max() <= rtol * scale
    assert (replaced - plain).abs().max() > 1e3 * rtol * scale  # the SAEs are far from perfect


def test_without_error_term_the_selected_tokens_are_the_reconstruction(vit, pixels):
    sae = random_sae(32, VIT_HOOKS[0])
    with torch.no_grad():
        x_BTD = vit.collect(pixels, [VIT_HOOKS[0]])[VIT_HOOKS[0]]
        with spliced(vit, [SpliceSite(sae, tokens="patches")], error_term=False):
            _, cache = vit.run_with_cache(pixels, names_filter=[VIT_HOOKS[0]])
    out_BTD = cache[VIT_HOOKS[0]]
    torch.testing.assert_close(out_BTD[:, :3], x_BTD[:, :3], rtol=0, atol=0)  # CLS + 2 registers untouched
    expected = sae(x_BTD[:, 3:].reshape(-1, 32)).reshape(3, -1, 32)
    torch.testing.assert_close(out_BTD[:, 3:], expected, rtol=1e-5, atol=1e-6)


def test_sae_hook_points_reach_run_with_cache(vit, pixels):
    sites = _vit_sites(vit)
    before = set(vit.hook_dict)
    with torch.no_grad():
        x_BTD = vit.collect(pixels, [VIT_HOOKS[0]])[VIT_HOOKS[0]][:, 3:]
        with spliced(vit, sites) as splice:
            assert set(splice.hook_point_names) <= set(vit.hook_dict)
            _, cache = vit.run_with_cache(pixels, names_filter=lambda name: "hook_sae" in name)
    assert set(vit.hook_dict) == before and not any(h.has_hooks() for h in vit.hook_dict.values())
    name = VIT_HOOKS[0]
    acts = cache[f"{name}.hook_sae_acts"]
    assert acts.shape == (3, 16, 128)
    codes = sites[0].sae.encode(x_BTD.reshape(-1, 32)).reshape(3, 16, 128)
    torch.testing.assert_close(acts, codes, rtol=1e-5, atol=1e-6)
    recon = cache[f"{name}.hook_sae_recons"] + cache[f"{name}.hook_sae_error"]
    torch.testing.assert_close(recon, x_BTD, rtol=1e-5, atol=1e-5)
    assert cache[f"{VIT_HOOKS[1]}.hook_sae_acts"].shape == (3, 19, 128)  # cls + registers + patches


def test_run_with_hooks_on_codes_equals_an_ablate_edit(vit, pixels):
    sae = random_sae(32, VIT_HOOKS[0])
    with torch.no_grad():
        codes = sae.encode(vit.collect(pixels, [VIT_HOOKS[0]])[VIT_HOOKS[0]].reshape(-1, 32))
    feature = int((codes != 0).sum(0).argmax())

    def zero(acts, hook):
        acts = acts.clone()
        acts[..., feature] = 0
        return acts

    with torch.no_grad():
        with spliced(vit, [sae]):
            hooked = vit.run_with_hooks(pixels, fwd_hooks=[(f"{VIT_HOOKS[0]}.hook_sae_acts", zero)])
            plain_spliced = vit(pixels)
        with spliced(vit, [sae], edits=[FeatureEdit("ablate", (feature,))]):
            edited = vit(pixels)
    torch.testing.assert_close(hooked, edited, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(edited, plain_spliced, atol=1e-4)


def test_gradient_reaches_codes_and_matches_a_steer(vit, pixels):
    sae = random_sae(32, VIT_HOOKS[1])
    saved = {}

    def keep(acts, hook):
        acts = acts.detach().requires_grad_(True)
        saved["acts"] = acts
        return acts

    model = vit.double()
    sae = sae.double()
    x = pixels.double()
    with spliced(model, [sae]):
        logits = model.run_with_hooks(x, fwd_hooks=[(f"{VIT_HOOKS[1]}.hook_sae_acts", keep)])
    (grad,) = torch.autograd.grad(logits[:, 2].sum(), saved["acts"])
    token, feature = 5, 7
    eps = 1e-6
    mask = [[False] * 4 for _ in range(4)]
    mask[(token - 3) // 4][(token - 3) % 4] = True
    steer = FeatureEdit("steer", (feature,), value=eps, where={"tokens": "patches", "patch_mask": mask})
    with torch.no_grad(), spliced(model, [sae], edits=[steer]):
        moved = model(x)
    finite = (moved[:, 2] - logits.detach()[:, 2]) / eps
    torch.testing.assert_close(finite, grad[:, token, feature], rtol=1e-4, atol=1e-8)


def test_nothing_is_left_on_the_model(vit, pixels):
    sae = random_sae(32, VIT_HOOKS[0])
    names = list(vit.hook_dict)
    with torch.no_grad():
        before = vit(pixels)
        with pytest.raises(RuntimeError), spliced(vit, [sae]):
            raise RuntimeError("inside the block")
        after = vit(pixels)
    assert list(vit.hook_dict) == names and list(vit.mod_dict) == list(dict(vit.mod_dict))
    assert torch.equal(before, after)
    assert not any(h.has_hooks() for h in vit.hook_dict.values())


def test_fire_counts(vit, pixels):
    sae = random_sae(32, VIT_HOOKS[0])
    with torch.no_grad():
        codes = sae.encode(vit.collect(pixels, [VIT_HOOKS[0]])[VIT_HOOKS[0]][:, 3:].reshape(-1, 32))
        with spliced(vit, [SpliceSite(sae, tokens="patches")], count_fires=True) as splice:
            vit(pixels)
    assert torch.equal(splice.sites[VIT_HOOKS[0]].fire_counts_F, (codes != 0).sum(0))


def test_bad_input_is_one_clear_error(vit, cnn, tmp_path):
    with pytest.raises(
        SpliceError, match="d_in=8 does not match hook 'blocks.0.hook_resid_post' of width 32"
    ):
        with spliced(vit, [random_sae(8, VIT_HOOKS[0])]):
            pass
    with pytest.raises(SpliceError, match="no hook 'blocks.9.hook_resid_post'"):
        with spliced(vit, [random_sae(32, "blocks.9.hook_resid_post")]):
            pass
    with pytest.raises(SpliceError, match="two SAEs at the same hook"):
        with spliced(vit, [random_sae(32, VIT_HOOKS[0]), random_sae(32, VIT_HOOKS[0])]):
            pass
    with pytest.raises(EditError, match=r"feature\(s\) \[128\] out of range: the SAE at .* has 128"):
        with spliced(vit, [random_sae(32, VIT_HOOKS[0])], edits=[FeatureEdit("ablate", (128,))]):
            pass
    with pytest.raises(EditError, match="no SAE is spliced"):
        with spliced(vit, [random_sae(32, VIT_HOOKS[0])], edits=[FeatureEdit("ablate", (1,), hook_name="x")]):
            pass
    store = tmp_path / "store"
    write_json_atomic(
        store / "manifest.json", {"tokens": {"selection": "patches", "include_registers": False}}
    )
    trained = random_sae(32, VIT_HOOKS[0]).with_config(store=str(store))
    with pytest.raises(SelectionError, match="'cls' include kinds the SAE .* was not trained on .*'patches'"):
        with spliced(vit, [SpliceSite(trained, tokens="cls")]):
            pass
    with pytest.raises(SelectionError, match="spliced on 'patches' only"):
        with spliced(vit, [trained], edits=[FeatureEdit("ablate", (1,), where={"tokens": "cls"})]):
            pass
    with pytest.raises(SelectionError, match="select no token"):
        with spliced(cnn, [SpliceSite(random_sae(12, CNN_HOOK), tokens="cls")]):
            pass
