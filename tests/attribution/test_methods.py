"""Attribution methods against hand-computed values on tiny models."""

import pytest
import torch
from torch import nn

from tests.attribution.conftest import small_vit
from vitsae.attribution import MethodConfig, Target, TargetFunction, attribute, grid_view
from vitsae.attribution.rise import rise, rise_masks
from vitsae.data.preprocess import Preprocess
from vitsae.models import HookedModule


def linear_model() -> HookedModule:
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    return HookedModule(net, Preprocess(size=(8, 8))).eval()


def smooth_cnn() -> HookedModule:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    return HookedModule(net, Preprocess(size=(8, 8))).eval()


def test_gradients_of_a_linear_model_are_its_weights():
    model = linear_model()
    fn = TargetFunction(model, Target.parse("class:1"))
    pixels = torch.randn(2, 3, 8, 8)
    classes = torch.tensor([1, 1])
    weights_CHW = model.model[1].weight[1].detach().view(3, 8, 8)
    saliency = attribute(fn, "saliency", pixels, classes, MethodConfig()).maps_BHW
    torch.testing.assert_close(saliency, weights_CHW.abs().amax(dim=0).expand(2, 8, 8))
    gxi = attribute(fn, "gradxinput", pixels, classes, MethodConfig()).maps_BHW
    torch.testing.assert_close(gxi, (weights_CHW * pixels).sum(dim=1))


def test_integrated_gradients_is_complete_within_its_stated_error():
    torch.manual_seed(1)
    model = smooth_cnn()
    fn = TargetFunction(model, Target.parse("class:pred"))
    pixels = torch.randn(3, 3, 8, 8)
    classes = fn.classes_for(pixels, torch.zeros(3, dtype=torch.int64))
    cfg = MethodConfig(ig_steps=64, ig_internal_batch_size=40)
    result = attribute(fn, "ig", pixels, classes, cfg)
    black = torch.full_like(pixels, -1.0)  # pixel 0 under mean 0.5, std 0.5
    with torch.no_grad():
        gap = fn(pixels, classes) - fn(black, classes)
    total = result.maps_BHW.sum(dim=(1, 2))
    assert torch.all((total - gap).abs() <= 1e-3 * gap.abs() + 1e-5)
    torch.testing.assert_close(result.delta_B, total - gap, atol=1e-4, rtol=1e-4)


def test_grad_cam_on_vit_tokens_equals_the_hand_computed_map():
    model = small_vit()
    hook = "blocks.1.hook_resid_pre"
    fn = TargetFunction(model, Target.parse("class:2"))
    pixels = torch.randn(2, 3, 16, 16)
    classes = torch.tensor([2, 2])
    saved = {}

    def keep(acts, hook):
        acts.retain_grad()
        saved["acts"] = acts
        return acts

    with model.hooks(fwd_hooks=[(hook, keep)]):
        fn(pixels, classes).sum().backward()
    acts, grads = saved["acts"][:, 1:], saved["acts"].grad[:, 1:]  # patch tokens, after the CLS token
    cam = torch.relu((acts * grads.mean(dim=1, keepdim=True)).sum(dim=-1)).view(2, 1, 4, 4)
    expected = torch.nn.functional.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    got = attribute(fn, "gradcam", pixels, classes, MethodConfig(gradcam_hook=hook)).maps_BHW
    torch.testing.assert_close(got, expected.detach(), atol=1e-6, rtol=1e-5)


def test_grid_view_leaves_the_forward_pass_unchanged():
    model = small_vit()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(pixels)
        with grid_view(model, "blocks.0.attn.hook_q", (16, 16)) as view:
            seen = []
            handle = view.register_forward_hook(lambda m, i, o: seen.append(o.shape))
            after = model(pixels)
            handle.remove()
    torch.testing.assert_close(before, after)
    assert seen == [torch.Size([2, 16, 4, 4])]  # (B, heads * d_head, grid)


@pytest.mark.parametrize("method", ["occlusion", "rise", "smoothgrad:saliency", "smoothgrad:gradcam"])
def test_every_method_gives_finite_maps_at_image_resolution(method):
    model = small_vit()
    fn = TargetFunction(model, Target.parse("class:0"))
    cfg = MethodConfig(rise_masks=32, smoothgrad_samples=2, occlusion_window=4)
    maps = attribute(fn, method, torch.randn(2, 3, 16, 16), torch.tensor([0, 0]), cfg).maps_BHW
    assert maps.shape == (2, 16, 16) and torch.isfinite(maps).all()


def test_rise_finds_the_region_a_score_reads():
    def score(pixels_BCHW, classes_B):
        return pixels_BCHW[:, :, :8, :8].mean(dim=(1, 2, 3))

    pixels = torch.ones(1, 3, 16, 16)
    generator = torch.Generator().manual_seed(0)
    maps = rise(score, pixels, torch.zeros(1), torch.zeros_like(pixels), 400, 4, 0.5, 64, generator)
    inside, outside = maps[0, 1:7, 1:7].mean(), maps[0, 10:, 10:].mean()
    assert inside > outside + 0.05


def test_rise_masks_are_smooth_and_in_range():
    masks = rise_masks(50, 4, 0.5, (16, 12), torch.Generator().manual_seed(0))
    assert masks.shape == (50, 1, 16, 12)
    assert masks.min() >= 0 and masks.max() <= 1
    assert 0.3 < float(masks.mean()) < 0.7


def test_grad_cam_on_cnn_maps_equals_the_hand_computed_map():
    torch.manual_seed(0)
    model = smooth_cnn()
    fn = TargetFunction(model, Target.parse("class:1"))
    pixels, classes = torch.randn(2, 3, 8, 8), torch.tensor([1, 1])
    saved = {}

    def keep(acts, hook):
        acts.retain_grad()
        saved["acts"] = acts
        return acts

    with model.hooks(fwd_hooks=[("1", keep)]):  # the Tanh's (B, 4, 8, 8) maps
        fn(pixels, classes).sum().backward()
    acts, grads = saved["acts"], saved["acts"].grad
    expected = torch.relu((acts * grads.mean(dim=(2, 3), keepdim=True)).sum(dim=1))
    got = attribute(fn, "gradcam", pixels, classes, MethodConfig()).maps_BHW  # default: the last grid hook
    torch.testing.assert_close(got, expected.detach(), atol=1e-6, rtol=1e-5)
