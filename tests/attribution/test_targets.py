"""Targets: spec strings, every kind's scalar, and one-line errors for what a model cannot do."""

import pytest
import torch
from torch import nn

from tests.attribution.conftest import small_vit
from vitsae.attribution import MethodConfig, Target, TargetError, TargetFunction, attribute
from vitsae.data.preprocess import Preprocess
from vitsae.errors import VitsaeError
from vitsae.models import HookedModule
from vitsae.sae import SAEConfig, SparseAutoencoder

NAMES = ["cat", "dog", "fox"]


@pytest.mark.parametrize(
    "spec",
    [
        "class:1",
        "prob:label",
        "class:pred",
        "feature:7",
        "feature:7@1,2",
        "neuron:blocks.0.hook_resid_post:3@0,1",
    ],
)
def test_specs_round_trip(spec):
    assert Target.parse(spec).describe() == spec


def test_class_names_resolve_to_indices():
    assert Target.parse("prob:dog", NAMES) == Target("prob", index=1)


def test_a_class_the_source_lacks_is_one_line_listing_the_classes():
    with pytest.raises(TargetError, match=r"no class 'wolf'; classes: cat, dog, fox") as info:
        Target.parse("class:wolf", NAMES)
    assert isinstance(info.value, VitsaeError) and "\n" not in str(info.value)


def test_a_class_index_the_model_lacks_is_refused():
    with pytest.raises(TargetError, match=r"class 5 out of range: the model has 3 outputs"):
        TargetFunction(small_vit(), Target.parse("class:5"))


@pytest.mark.parametrize("spec", ["klass:1", "feature:x", "neuron:blocks.0.hook_resid_post", "feature:1@2"])
def test_bad_specs_say_what_is_accepted(spec):
    with pytest.raises(TargetError, match="target"):
        Target.parse(spec)


def test_grad_cam_at_a_hook_without_a_grid_lists_the_hooks_that_have_one():
    model = small_vit()
    fn = TargetFunction(model, Target.parse("class:0"))
    cfg = MethodConfig(gradcam_hook="hook_pooled")
    with pytest.raises(
        TargetError,
        match="'hook_pooled' has no patch grid of more than one patch; hooks with a spatial layout: ",
    ) as info:
        attribute(fn, "gradcam", torch.randn(1, 3, 16, 16), torch.tensor([0]), cfg)
    assert "blocks.1.hook_resid_post" in str(info.value) and "\n" not in str(info.value)


def test_an_image_size_the_model_cannot_take_is_one_line():
    with pytest.raises(TargetError, match=r"image size 18x18 is not a multiple of the model's patch size 4"):
        TargetFunction(small_vit(), Target.parse("class:0"), image_hw=(18, 18))
    fn = TargetFunction(small_vit(), Target.parse("class:0"))
    with pytest.raises(TargetError, match=r"set up for \(16, 16\)"):
        attribute(fn, "saliency", torch.randn(1, 3, 20, 20), torch.tensor([0]), MethodConfig())


def test_neuron_and_feature_targets_read_the_hook_tokens():
    model = small_vit()
    pixels = torch.randn(2, 3, 16, 16)
    hook = "blocks.0.hook_resid_post"
    tokens = model.collect(pixels, [hook])[hook][:, 1:]  # patch tokens
    unit = TargetFunction(model, Target.parse(f"neuron:{hook}:3@1,2"))
    torch.testing.assert_close(unit(pixels, torch.zeros(2)), tokens[:, 1 * 4 + 2, 3])
    summed = TargetFunction(model, Target.parse(f"neuron:{hook}:3"))
    torch.testing.assert_close(summed(pixels, torch.zeros(2)), tokens[..., 3].sum(dim=1))
    sae = SparseAutoencoder(
        SAEConfig(d_in=16, expansion_factor=2, architecture="relu", hook_name=hook)
    ).eval()
    feature = TargetFunction(model, Target.parse("feature:5"), sae=sae)
    codes = sae.encode(tokens.reshape(-1, 16))[:, 5].view(2, 16)
    torch.testing.assert_close(feature(pixels, torch.zeros(2)), codes.sum(dim=1))


def test_feature_targets_need_a_matching_sae():
    model = small_vit()
    with pytest.raises(TargetError, match="needs an SAE"):
        TargetFunction(model, Target.parse("feature:1"))
    sae = SparseAutoencoder(SAEConfig(d_in=16, expansion_factor=2, architecture="relu", hook_name="nope"))
    with pytest.raises(TargetError, match="trained on hook 'nope', which this model lacks"):
        TargetFunction(model, Target.parse("feature:1"), sae=sae)


def test_per_image_classes_come_from_labels_or_predictions():
    model = HookedModule(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)), Preprocess(size=(8, 8)))
    pixels = torch.randn(3, 3, 8, 8)
    labels = torch.tensor([2, 0, 1])
    assert TargetFunction(model, Target.parse("class:label")).classes_for(pixels, labels).tolist() == [
        2,
        0,
        1,
    ]
    predicted = model(pixels).argmax(dim=1)
    assert torch.equal(
        TargetFunction(model, Target.parse("class:pred")).classes_for(pixels, labels), predicted
    )
    probs = TargetFunction(model, Target.parse("prob:label"))(pixels, labels)
    torch.testing.assert_close(probs, model(pixels).softmax(dim=1)[torch.arange(3), labels])
