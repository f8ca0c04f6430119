"""HookedModule on transformers CNNs (ResNet, ConvNeXt) and a plain nn.Module."""

from __future__ import annotations

import pytest
import torch
import transformers as hf
from torch import nn

from tests.models.conftest import captured_pixels
from vitsae.data.preprocess import Preprocess
from vitsae.models import HookedModule, TokenLayout

STAGES = [f"resnet.encoder.stages.{i}" for i in range(3)]


@pytest.fixture
def resnet() -> nn.Module:
    torch.manual_seed(0)
    config = hf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 12, 16], depths=[1, 2, 1], num_labels=5)
    model = hf.ResNetForImageClassification(config)
    with torch.no_grad():  # non-trivial batch-norm statistics and classifier bias
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
        model.classifier[1].bias.normal_()
    return model.eval()


@pytest.fixture
def wrapped(resnet) -> HookedModule:
    return HookedModule(resnet, Preprocess(size=(32, 32)))


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32)


def test_outputs_and_every_stage_match_the_reference(resnet, wrapped, pixels):
    with torch.no_grad():
        want = resnet(pixels, output_hidden_states=True)
        logits, cache = wrapped.run_with_cache(pixels, names_filter=STAGES + ["hook_logits"])
    torch.testing.assert_close(logits, want.logits, rtol=0, atol=0)
    assert sorted(cache) == sorted(STAGES + ["hook_logits"])
    for i, stage in enumerate(STAGES):  # hidden_states[0] is the embedder output
        torch.testing.assert_close(cache[stage], want.hidden_states[i + 1], rtol=0, atol=0)
    assert cache["resnet.encoder.stages.2"].shape == (2, 16, 2, 2)


def test_hook_names_are_module_paths_in_run_order(wrapped):
    names = wrapped.hook_names()
    assert names[-1] == "hook_logits"
    assert [names.index(s) for s in STAGES] == sorted(names.index(s) for s in STAGES)
    assert "resnet.embedder" in names and "resnet.pooler" in names and "classifier" in names


def test_zeroing_last_stage_leaves_classifier_bias(resnet, wrapped, pixels):
    logits = wrapped.run_with_hooks(
        pixels, fwd_hooks=[("resnet.encoder.stages.2", lambda acts, hook: torch.zeros_like(acts))]
    )
    # logits = classifier(avg_pool(zeros)) = classifier bias
    torch.testing.assert_close(logits, resnet.classifier[1].bias.expand(2, -1), rtol=0, atol=0)
    assert all(not hp.fwd_hooks for hp in wrapped.hook_dict.values())
    torch.testing.assert_close(wrapped(pixels), resnet(pixels).logits)


def test_cached_activation_survives_in_place_residual_add(resnet, wrapped, pixels):
    # ResNet adds the shortcut in place into the conv branch's output; the cache must hold the branch value
    name = "resnet.encoder.stages.1.layers.1.layer"
    _, cache = wrapped.run_with_cache(pixels, names_filter=[name])
    block = resnet.resnet.encoder.stages[1].layers[1]
    with torch.no_grad():
        stage_in = resnet.resnet.encoder.stages[1].layers[0](
            resnet.resnet.encoder.stages[0](resnet.resnet.embedder(pixels))
        )
        torch.testing.assert_close(cache[name], block.layer(stage_in), rtol=0, atol=0)


def test_collect_equals_run_with_cache_as_tokens(wrapped, pixels):
    names = ["resnet.encoder.stages.1", "resnet.embedder", "hook_logits"]
    got = wrapped.collect(pixels, names)
    _, cache = wrapped.run_with_cache(pixels, names_filter=names)
    assert list(got) == names
    maps = cache["resnet.encoder.stages.1"]  # (B, C, H, W) -> (B, H*W, C), row-major
    assert got["resnet.encoder.stages.1"].shape == (2, 4 * 4, 12)
    torch.testing.assert_close(got["resnet.encoder.stages.1"][:, 1 * 4 + 2], maps[:, :, 1, 2])
    torch.testing.assert_close(got["hook_logits"], cache["hook_logits"][:, None])
    for name in names:
        layout = wrapped.token_layout(name)
        assert got[name].shape == (2, layout.n_tokens, layout.width)


def test_collect_stops_once_deepest_hook_fired(resnet, wrapped, pixels):
    ran = []  # modules that started running
    for i, stage in enumerate(resnet.resnet.encoder.stages):
        stage.register_forward_pre_hook(lambda *_, i=i: ran.append(i))
    resnet.classifier.register_forward_pre_hook(lambda *_: ran.append("classifier"))
    wrapped.collect(pixels, ["resnet.encoder.stages.0", "resnet.embedder"])
    assert ran == [0]
    ran.clear()
    wrapped.collect(pixels, ["resnet.encoder.stages.1"])
    assert ran == [0, 1]
    assert all(not hp.fwd_hooks for hp in wrapped.hook_dict.values())
    ran.clear()
    wrapped(pixels)
    assert ran == [0, 1, 2, "classifier"]


def test_token_layout_of_maps_and_vectors(wrapped):
    assert wrapped.token_layout("resnet.encoder.stages.0") == TokenLayout(0, 0, (8, 8), 8)
    assert wrapped.token_layout("resnet.encoder.stages.0", image_hw=(64, 48)).grid_hw == (16, 12)
    assert wrapped.token_layout("hook_logits") == TokenLayout(1, 0, None, 5)


def test_unknown_hook_and_unknown_module_are_clear_errors(resnet, wrapped, pixels):
    with pytest.raises(ValueError, match=r"did you mean 'resnet.encoder.stages.1'"):
        wrapped.collect(pixels, ["resnet.encoder.stage.1"])
    with pytest.raises(ValueError, match="Valid hook names: .*resnet.encoder.stages.0"):
        HookedModule(resnet, Preprocess(size=(32, 32)), hook_modules=["resnet.nope"])


def test_chosen_hook_modules_only(resnet):
    wrapped = HookedModule(resnet, Preprocess(size=(32, 32)), hook_modules=STAGES[::-1])
    assert wrapped.hook_names() == STAGES + ["hook_logits"]


def test_probe_leaves_batch_norm_statistics_and_mode_alone(resnet):
    resnet.train()
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    HookedModule(resnet, Preprocess(size=(32, 32)))
    assert resnet.training
    for key, value in resnet.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_convnext_through_the_wrapper(pixels):
    torch.manual_seed(0)
    config = hf.ConvNextConfig(num_stages=3, hidden_sizes=[8, 16, 24], depths=[1, 1, 1], num_labels=4)
    model = hf.ConvNextForImageClassification(config).eval()
    with torch.no_grad():
        model.convnext.layernorm.bias.normal_()
        model.classifier.bias.normal_()
    wrapped = HookedModule(model, Preprocess(size=(32, 32)))
    stages = [f"convnext.encoder.stages.{i}" for i in range(3)]
    with torch.no_grad():
        want = model(pixels, output_hidden_states=True)
    logits, cache = wrapped.run_with_cache(pixels, names_filter=stages)
    torch.testing.assert_close(logits, want.logits, rtol=0, atol=0)
    for i, stage in enumerate(stages):
        torch.testing.assert_close(cache[stage], want.hidden_states[i + 1], rtol=0, atol=0)
    zeroed = wrapped.run_with_hooks(pixels, fwd_hooks=[(stages[-1], lambda a, hook: torch.zeros_like(a))])
    # mean-pool of zeros is 0 -> LayerNorm gives its bias -> classifier
    expected = model.classifier(model.convnext.layernorm.bias)
    torch.testing.assert_close(zeroed, expected.expand(2, -1), rtol=0, atol=1e-6)
    assert wrapped.collect(pixels, [stages[1]])[stages[1]].shape == (2, 4 * 4, 16)


def test_plain_module_with_token_outputs():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 4, stride=4)
            self.mix = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            tokens = self.mix(self.conv(x).flatten(2).transpose(1, 2))
            return self.head(tokens.mean(1))

    wrapped = HookedModule(Tiny(), Preprocess(size=(16, 16)))
    assert wrapped.hook_names() == ["conv", "mix", "head", "hook_logits"]
    assert wrapped.token_layout("conv") == TokenLayout(0, 0, (4, 4), 4)
    assert wrapped.token_layout("mix") == TokenLayout(
        16, 0, None, 4
    )  # token sequences are not mapped to patches
    got = wrapped.collect(torch.randn(3, 3, 16, 16), ["mix"])
    assert got["mix"].shape == (3, 16, 4)


def test_weights_hash_changes_with_weights(resnet):
    wrapped = HookedModule(resnet, Preprocess(size=(32, 32)))
    first = wrapped.weights_hash()
    assert first == HookedModule(resnet, Preprocess(size=(32, 32))).weights_hash()
    with torch.no_grad():
        resnet.classifier[1].bias[0] += 1.0
    assert wrapped.weights_hash() != first


def test_unwrap_removes_the_hook_points(resnet, pixels):
    wrapped = HookedModule(resnet, Preprocess(size=(32, 32)))
    seen = []
    wrapped.add_hook("resnet.encoder.stages.0", lambda acts, hook: seen.append(hook.name))
    wrapped(pixels)
    assert seen == ["resnet.encoder.stages.0"]
    assert wrapped.unwrap() is resnet
    resnet(pixels)
    assert seen == ["resnet.encoder.stages.0"]
    assert all(not module._forward_hooks for module in resnet.modules())


def test_to_tokens_and_from_tokens_are_inverse_at_every_hook(wrapped, pixels):
    _, cache = wrapped.run_with_cache(pixels)
    for name, acts in cache.items():
        tokens = wrapped.to_tokens(name, acts)
        assert tokens.ndim == 3
        torch.testing.assert_close(wrapped.from_tokens(name, tokens, acts.shape), acts, rtol=0, atol=0)


def test_capture_keeps_gradients_and_equals_collect(resnet, wrapped, pixels):
    names = ["resnet.encoder.stages.1", "resnet.embedder"]
    pixels = captured_pixels(wrapped, pixels, names, "resnet.encoder.stages.1")
    reference = pixels.detach().clone().requires_grad_(True)
    stages = resnet.resnet.encoder.stages
    stages[1](stages[0](resnet.resnet.embedder(reference))).pow(2).sum().backward()
    assert pixels.grad.abs().sum() > 0
    torch.testing.assert_close(pixels.grad, reference.grad)
