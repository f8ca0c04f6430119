"""load(spec) for every scheme, the native checkpoint format, HF preprocessing and every error case."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers as hf
from torch import nn

from vitsae.data.preprocess import Preprocess
from vitsae.fileio import PICKLE_SUFFIXES
from vitsae.models import HookedModule, HookedViT, load, load_hooked_vit, save_hooked_vit
from vitsae.models.convert_hf import hooked_vit_from_hf
from vitsae.models.hf_preprocess import preprocess_from_hf

VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
           patch_size=8)  # fmt: skip
CLIP_PROCESSOR = {
    "size": {"shortest_edge": 32},
    "crop_size": {"height": 32, "width": 32},
    "do_center_crop": True,
    "resample": 3,
    "image_mean": [0.48, 0.46, 0.41],
    "image_std": [0.27, 0.26, 0.28],
}


@pytest.fixture
def vit_dir(tmp_path, hf_vit_models):
    ref = hf_vit_models["vit_cls"]
    ref.save_pretrained(tmp_path / "vit")
    (tmp_path / "vit" / "preprocessor_config.json").write_text(json.dumps(CLIP_PROCESSOR))
    return tmp_path / "vit", ref


@pytest.fixture
def resnet_dir(tmp_path):
    config = hf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    ref = hf.ResNetForImageClassification(config).eval()
    ref.save_pretrained(tmp_path / "resnet")
    processor = {"size": {"shortest_edge": 32}, "crop_pct": 0.875, "resample": 2,
                 "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}  # fmt: skip
    (tmp_path / "resnet" / "preprocessor_config.json").write_text(json.dumps(processor))
    return tmp_path / "resnet", ref


def test_hf_vit_directory(vit_dir):
    path, ref = vit_dir
    model = load(f"hf:{path}")
    assert isinstance(model, HookedViT) and not model.training
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(pixels), ref(pixels).logits, rtol=0, atol=1e-5)
    assert model.preprocess == Preprocess((32, 32), 32, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28), "bicubic")


def test_hf_cnn_directory_is_wrapped(resnet_dir):
    path, ref = resnet_dir
    model = load(f"hf:{path}", dtype=torch.float64)
    assert isinstance(model, HookedModule)
    assert model.preprocess.size == (32, 32) and model.preprocess.resize_shortest_edge == 36
    pixels = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(model(pixels).float(), ref(pixels.float()).logits, rtol=0, atol=1e-5)
    assert "resnet.encoder.stages.1" in model.hook_names()


def test_hf_full_clip_model_loads_its_vision_tower(tmp_path):
    vision = dict(VIT)
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                vocab_size=99, bos_token_id=0, eos_token_id=1, pad_token_id=1)  # fmt: skip
    ref = hf.CLIPModel(hf.CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)).eval()
    ref.save_pretrained(tmp_path / "clip")
    with pytest.warns(UserWarning, match="carries no preprocessing"):
        model = load(f"hf:{tmp_path / 'clip'}")
    pixels = torch.randn(2, 3, 32, 32)
    want = ref.get_image_features(pixels)
    want = getattr(want, "pooler_output", want)
    assert model.cfg.head_out == 16
    torch.testing.assert_close(model(pixels), want, rtol=0, atol=1e-5)


def test_hf_refuses_pickle_weights(tmp_path, resnet_dir):
    path, _ = resnet_dir
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="only pickle weights .*pytorch_model.bin.*safetensors only"):
        load(f"hf:{path}")


@pytest.mark.parametrize("suffix", PICKLE_SUFFIXES)
def test_a_folder_of_only_pickle_weights_is_refused(tmp_path, suffix):
    (tmp_path / f"weights{suffix}").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ValueError, match=rf"only pickle weights \(weights\{suffix}\)"):
        load(f"hf:{tmp_path}")


def test_hf_missing_model_and_unsupported_architecture(tmp_path):
    with pytest.raises(ValueError, match="cannot load a Hugging Face config from 'no/such-model'"):
        load("hf:no/such-model")
    config = hf.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                           vocab_size=50)  # fmt: skip
    hf.BertModel(config).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"unsupported architecture \['BertModel'\].*supported: .*ViTModel"):
        load(f"hf:{tmp_path / 'bert'}")


@pytest.mark.parametrize("spec", ["resnet50", "tf:model", "hf:", ":x"])
def test_unknown_scheme_lists_valid_ones(spec):
    with pytest.raises(ValueError, match="unknown model spec .*hf:<local dir.*timm:.*vitsae:.*module:"):
        load(spec)


def test_shipped_native_and_hf_checkpoints(tmp_path, monkeypatch, hf_vit_models, resnet_dir):
    root = tmp_path / "checkpoints"
    model = hooked_vit_from_hf(hf_vit_models["dinov2_reg_cls"])
    save_hooked_vit(model, root / "tiny-dino")
    (root / "tiny-dino" / "card.json").write_text("{}")
    resnet_path, ref = resnet_dir
    resnet_path.rename(root / "tiny-resnet")
    monkeypatch.setenv("VITSAE_CHECKPOINTS", str(root))
    loaded = load("vitsae:tiny-dino")
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(pixels), model(pixels), rtol=0, atol=0)
    assert loaded.weights_hash() == model.weights_hash()
    torch.testing.assert_close(load("vitsae:tiny-resnet")(pixels), ref(pixels).logits, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="no shipped model 'tiny-vit' .*shipped: tiny-dino, tiny-resnet"):
        load("vitsae:tiny-vit")


def test_native_checkpoint_round_trip_and_version_check(tmp_path, hf_vit_models):
    model = hooked_vit_from_hf(hf_vit_models["siglip"], Preprocess((32, 32), 36, resample="bilinear"))
    save_hooked_vit(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["hooked_vit.json", "model.safetensors"]
    loaded = load_hooked_vit(tmp_path / "m")
    assert loaded.cfg == model.cfg and loaded.preprocess == model.preprocess
    pixels = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(pixels), model(pixels), rtol=0, atol=0)
    meta = json.loads((tmp_path / "m" / "hooked_vit.json").read_text())
    meta["version"] = 99
    (tmp_path / "m" / "hooked_vit.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version 99; expected 'vitsae.hooked_vit' version 1"):
        load_hooked_vit(tmp_path / "m")


def test_module_factory(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn
        from vitsae.data.preprocess import Preprocess

        def with_preprocess():
            model = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
            model.preprocess = Preprocess(size=(16, 16))
            return model

        def without_preprocess():
            return nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.AdaptiveAvgPool2d(1))

        def not_a_module():
            return 3
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load("module:my_models:with_preprocess")
    assert isinstance(model, HookedModule) and model.preprocess.size == (16, 16)
    assert model.hook_names() == ["0", "1", "2", "3", "hook_logits"]
    assert model.token_layout("0").grid_hw == (4, 4)
    with pytest.warns(UserWarning, match="carries no preprocessing; using ImageNet"):
        assert load("module:my_models:without_preprocess").preprocess.size == (224, 224)
    with pytest.raises(ValueError, match="returned a int, not a torch.nn.Module"):
        load("module:my_models:not_a_module")
    with pytest.raises(ValueError, match="cannot find factory 'nope' in module 'my_models'"):
        load("module:my_models:nope")
    with pytest.raises(ValueError, match="cannot find factory .* in module 'no_such_module'"):
        load("module:no_such_module:f")
    with pytest.raises(ValueError, match="module spec must be module:<python.path:factory>"):
        load("module:my_models")


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed here")
def test_timm_without_timm_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="needs the optional `timm` package, which is not installed"):
        load(f"timm:{tmp_path}")


def test_preprocess_from_hf_settings():
    vit = {
        "size": {"height": 224, "width": 224},
        "resample": 2,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
    }
    assert preprocess_from_hf(vit, (1, 1)) == Preprocess((224, 224), None, (0.5,) * 3, (0.5,) * 3, "bilinear")
    dino = {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}, "resample": 3}
    assert preprocess_from_hf(dino, (1, 1)).resize_shortest_edge == 256
    assert preprocess_from_hf(dino, (1, 1)).size == (224, 224)
    convnext = {"size": {"shortest_edge": 224}, "crop_pct": 0.875}
    assert preprocess_from_hf(convnext, (1, 1)) == Preprocess((224, 224), 256, (0.5,) * 3, (0.5,) * 3)
    assert (
        preprocess_from_hf({"size": {"shortest_edge": 384}, "crop_pct": 0.875}, (1, 1)).resize_shortest_edge
        is None
    )
    raw = preprocess_from_hf({"do_normalize": False}, (32, 32))
    assert raw.size == (32, 32) and raw.mean == (0.0,) * 3 and raw.std == (1.0,) * 3
    with pytest.warns(UserWarning, match="resample code 1 is not supported"):
        assert preprocess_from_hf({"resample": 1}, (8, 8)).resample == "bicubic"


def test_hooks_command_prints_layouts(resnet_dir, vit_dir, capsys):
    from vitsae.cli import main

    assert main(["hooks", f"hf:{vit_dir[0]}", "--filter", "resid_post"]) == 0
    out = capsys.readouterr().out
    assert "HookedViT, input 32x32" in out
    assert [line.split() for line in out.splitlines() if line.startswith("blocks.1")] == [
        ["blocks.1.hook_resid_post", "17", "1", "0", "4x4", "32"]
    ]
    assert main(["hooks", f"hf:{resnet_dir[0]}"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["resnet.encoder.stages.1"] == ["16", "0", "0", "4x4", "16"]
    assert rows["hook_logits"] == ["1", "1", "0", "-", "3"]


def test_loaded_model_moves_to_dtype(vit_dir):
    model = load(f"hf:{vit_dir[0]}", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_wrapping_a_module_keeps_it_an_nn_module():
    assert isinstance(HookedModule(nn.Conv2d(3, 2, 8, 8), Preprocess(size=(16, 16))), nn.Module)


def test_cached_hub_id_offline(tmp_path, resnet_dir):
    """A hub id resolves from the local Hugging Face cache with HF_HUB_OFFLINE=1 (fresh process: the cache
    location is read at import)."""
    snapshot = tmp_path / "hub" / "models--tiny--resnet" / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    resnet_dir[0].rename(snapshot)
    (tmp_path / "hub" / "models--tiny--resnet" / "refs").mkdir()
    (tmp_path / "hub" / "models--tiny--resnet" / "refs" / "main").write_text("abc123")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "vitsae.cli", "hooks", "hf:tiny/resnet", "--filter", "stages.1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "hf:tiny/resnet: HookedModule, input 32x32" in done.stdout
    assert any(line.split()[:2] == ["resnet.encoder.stages.1", "16"] for line in done.stdout.splitlines())


def test_hooks_command_reports_a_bad_spec(capsys):
    from vitsae.cli import main

    assert main(["hooks", "nope:x"]) == 2
    assert "vitsae hooks: error: unknown model spec 'nope:x'; use one of: hf:" in capsys.readouterr().err


def one_layer_vit_config(**extra) -> hf.ViTConfig:
    """A one-layer, 32-wide Hugging Face ViT config (4 heads, 32x32 images, 8x8 patches)."""
    return hf.ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        intermediate_size=64,
        **extra,
    )


def test_hf_vit_saved_without_pooler_loads_the_same_twice(tmp_path):
    ref = hf.ViTModel(one_layer_vit_config(), add_pooling_layer=False).eval()
    ref.save_pretrained(tmp_path)
    first, second = load(f"hf:{tmp_path}"), load(f"hf:{tmp_path}")
    assert first.weights_hash() == second.weights_hash()
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(first(pixels), second(pixels), rtol=0, atol=0)
    torch.testing.assert_close(first(pixels), ref(pixels).last_hidden_state[:, 0], rtol=1e-5, atol=1e-5)


def test_hf_checkpoint_missing_head_weights_is_refused(tmp_path):
    hf.ViTModel(one_layer_vit_config(num_labels=3), add_pooling_layer=False).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["architectures"] = ["ViTForImageClassification"]  # claims a head the weights do not hold
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"lacks weights for \['classifier.bias', 'classifier.weight'\]"):
        load(f"hf:{tmp_path}")
