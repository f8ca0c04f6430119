"""Faithfulness metrics against hand-computed values and independent references."""

import numpy as np
import pytest
import torch
from torch import nn

from vitsae.attribution import MethodConfig, Target, TargetFunction, attribute
from vitsae.data.preprocess import Preprocess
from vitsae.eval import faithfulness as fm
from vitsae.models import HookedModule, HookedViT, HookedViTConfig


def linear_score(weights_CHW: torch.Tensor):
    def score(pixels_BCHW, classes_B):
        return (pixels_BCHW * weights_CHW).sum(dim=(1, 2, 3))

    return score


def tiny_vit(pool: str = "cls") -> HookedViT:
    cfg = HookedViTConfig(
        d_model=16, n_layers=2, n_heads=2, d_mlp=32, image_size=(16, 16), patch_size=4, head_out=3, pool=pool
    )
    model = HookedViT(cfg)
    model.init_weights(std=0.3)
    return model.eval()


def test_deletion_of_everything_reaches_the_substrate_score_and_insertion_starts_there():
    weights = torch.randn(3, 8, 8)
    score = linear_score(weights)
    pixels, fill = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    maps = torch.randn(2, 8, 8)
    deletion, insertion = fm.pixel_curves(score, pixels, torch.zeros(2), maps, fill, steps=4)
    classes = torch.zeros(2)
    torch.testing.assert_close(deletion[:, 0], score(pixels, classes))
    torch.testing.assert_close(deletion[:, -1], score(fill, classes))
    torch.testing.assert_close(insertion[:, 0], score(fill, classes))
    torch.testing.assert_close(insertion[:, -1], score(pixels, classes))


def test_deleting_in_the_order_of_the_true_contributions_is_the_steepest():
    weights = torch.randn(1, 4, 4)
    pixels = torch.ones(1, 1, 4, 4)
    score = linear_score(weights)
    exact = (weights * pixels).sum(dim=1)
    deletion, _ = fm.pixel_curves(score, pixels, torch.zeros(1), exact, torch.zeros_like(pixels), steps=16)
    reversed_, _ = fm.pixel_curves(score, pixels, torch.zeros(1), -exact, torch.zeros_like(pixels), steps=16)
    assert fm.auc(deletion) < fm.auc(reversed_)
    # one pixel per step, most positive first: the curve is the running total of the sorted contributions
    contributions = torch.sort(exact.flatten(), descending=True).values
    expected = exact.sum() - torch.cat([torch.zeros(1), contributions.cumsum(0)])
    torch.testing.assert_close(deletion[0], expected)


def test_auc_and_aopc_by_hand():
    curves = torch.tensor([[1.0, 0.5, 0.0], [2.0, 2.0, 2.0]])
    torch.testing.assert_close(fm.auc(curves), torch.tensor([0.5, 2.0], dtype=torch.float64))
    torch.testing.assert_close(fm.aopc(curves), torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(
        fm.auc(torch.tensor([[1.0, 0.0]]), [0.0, 0.5]), torch.tensor([0.5], dtype=torch.float64)
    )


def test_pointing_game_on_a_synthetic_map_with_a_known_maximum():
    maps = torch.zeros(2, 10, 10)
    maps[0, 3, 4] = 1.0  # inside the mask
    maps[1, 8, 8] = 1.0  # outside it
    masks = torch.zeros(2, 10, 10, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    assert fm.pointing_game(maps, masks).tolist() == [1.0, 0.0]


def test_mass_inside_counts_positive_evidence_and_ignores_a_constant_offset():
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    signed = torch.full((1, 4, 4), -1.0)
    signed[0, 0, 0], signed[0, 3, 3] = 3.0, 1.0
    torch.testing.assert_close(fm.mass_inside(signed, masks), torch.tensor([0.75]))
    offset = torch.full((1, 4, 4), 10.0)
    offset[0, 0, :2] = 12.0
    torch.testing.assert_close(fm.mass_inside(offset, masks), torch.tensor([1.0]))


def test_spearman_handles_ties_like_scipy():
    stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (3, 50), generator=generator).float()
    b = a + torch.randint(0, 3, (3, 50), generator=generator).float()
    expected = [stats.spearmanr(x.numpy(), y.numpy()).statistic for x, y in zip(a, b, strict=True)]
    torch.testing.assert_close(fm.spearman(a, b), torch.tensor(expected, dtype=torch.float32))


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(2, 24, 20, generator=generator)
    b = (a + 0.3 * torch.rand(2, 24, 20, generator=generator)).clamp(0, 1)
    expected = [
        metrics.structural_similarity(
            x.double().numpy(),
            y.double().numpy(),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for x, y in zip(a, b, strict=True)
    ]
    torch.testing.assert_close(
        fm.ssim(a, b), torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(fm.ssim(a, a), torch.ones(2))


def test_randomisation_changes_a_gradient_map_of_a_tiny_model_and_restores_it():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 16 * 16, 3))
    model = HookedModule(net, Preprocess(size=(16, 16))).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fn = TargetFunction(model, Target.parse("class:0"))
    pixels, classes = torch.randn(4, 3, 16, 16), torch.zeros(4, dtype=torch.int64)
    original = attribute(fn, "saliency", pixels, classes, MethodConfig()).maps_BHW
    names, similarities = [], []
    for name in fm.cascade(model, seed=0):
        names.append(name)
        maps = attribute(fn, "saliency", pixels, classes, MethodConfig()).maps_BHW
        similarities.append(float(fm.similarity(original, maps)["spearman"].mean()))
    assert names == ["3", "0"]  # the Linear, then the Conv2d: from the output down
    assert similarities[-1] < 0.5
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    again = attribute(fn, "saliency", pixels, classes, MethodConfig()).maps_BHW
    torch.testing.assert_close(again, original)


def test_layer_groups_of_a_vit_run_from_the_embedding_to_the_head():
    names = [name for name, _ in fm.layer_groups(tiny_vit())]
    assert names[-3:] == ["blocks.1", "ln_final", "W_U+b_U"]
    assert names.index("blocks.0") < names.index("blocks.1") and names[0] in ("embed", "cls_token")


def test_patch_curves_drop_tokens_and_start_from_the_full_image():
    model = tiny_vit()
    fn = TargetFunction(model, Target.parse("class:1"))
    pixels, classes = torch.randn(2, 3, 16, 16), torch.ones(2, dtype=torch.int64)
    maps = torch.rand(2, 16, 16)
    deletion, insertion, fractions = fm.patch_curves(fn, model, pixels, classes, maps, steps=4)
    with torch.no_grad():
        full = fn(pixels, classes)
    torch.testing.assert_close(deletion[:, 0], full)
    torch.testing.assert_close(insertion[:, -1], full)
    assert fractions == [0.0, 1 / 16, 0.25, 0.5, 0.75, 15 / 16]
    assert deletion.shape == insertion.shape == (2, 6)
    # dropping no patch at all, through the hook, is the plain forward
    order = torch.arange(16).expand(2, 16)
    assert torch.equal(fm.ranks(order.float().neg()), order)


def test_ranks_put_the_largest_first():
    assert fm.ranks(torch.tensor([[0.1, 0.9, 0.5]])).tolist() == [[2, 0, 1]]
    assert fm.removal_counts(10, 4) == [0, 2, 5, 8, 10]
    assert np.isclose(float(fm.auc(torch.ones(1, 5))), 1.0)
