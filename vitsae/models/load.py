"""`load(spec)`: a hooked model from a spec string.

- `hf:<local dir or cached hub id>`: transformers ViT / CLIP / DINOv2 / SigLIP become a HookedViT; other
  vision models (ResNet, ConvNeXt, ...) are wrapped in a HookedModule. Local files only.
- `timm:<dir>`: a timm model saved as `config.json` (architecture, num_classes, pretrained_cfg) +
  `model.safetensors`, wrapped in a HookedModule; needs the optional `timm` package.
- `vitsae:<name>`: a model shipped under `checkpoints/<name>/` (or `$VITSAE_CHECKPOINTS/<name>/`), either
  the native HookedViT format or a Hugging Face `save_pretrained` directory.
- `module:<python.path:factory>`: `factory()` returns your nn.Module (optionally with a `preprocess`).

Weights are read from safetensors only; pickle checkpoints are refused.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import vitsae
from vitsae.data.preprocess import Preprocess
from vitsae.fileio import PICKLE_SUFFIXES, read_json
from vitsae.models.convert_hf import CONVERTERS, hooked_vit_from_hf
from vitsae.models.hf_preprocess import preprocess_from_hf
from vitsae.models.io import CONFIG_FILE, load_hooked_vit
from vitsae.models.protocol import HookedModel
from vitsae.models.vit import HookedViT
from vitsae.models.wrap import HookedModule, default_preprocess

SCHEMES = ("hf", "timm", "vitsae", "module")

# model_type of a Hugging Face config -> the class to load when its `architectures` names none we convert
_VIT_DEFAULTS = {
    "vit": "ViTModel",
    "clip": "CLIPVisionModelWithProjection",
    "clip_vision_model": "CLIPVisionModel",
    "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel",
    "siglip": "SiglipVisionModel",
    "siglip_vision_model": "SiglipVisionModel",
}


def load(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> HookedModel:
    """The hooked model named by `spec`, in eval mode on `device` in `dtype`."""
    scheme, sep, target = spec.partition(":")
    if not sep or scheme not in SCHEMES or not target:
        raise ValueError(
            f"unknown model spec {spec!r}; use one of: hf:<local dir or cached hub id>, timm:<dir>, "
            f"vitsae:<shipped name>, module:<python.path:factory>"
        )
    loaders = {"hf": load_hf, "timm": load_timm, "vitsae": load_shipped, "module": load_module}
    model = loaders[scheme](target)
    return model.to(device=device, dtype=dtype).eval()


def checkpoints_dir() -> Path:
    """Where shipped models live: $VITSAE_CHECKPOINTS, else <repo>/checkpoints."""
    env = os.environ.get("VITSAE_CHECKPOINTS")
    return Path(env) if env else Path(vitsae.__file__).resolve().parents[1] / "checkpoints"


def shipped_names() -> list[str]:
    root = checkpoints_dir()
    if not root.is_dir():
        return []
    marks = (CONFIG_FILE, "config.json")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any((p / m).is_file() for m in marks))


def load_shipped(name: str) -> HookedModel:
    names = shipped_names()
    if name not in names:
        raise ValueError(
            f"no shipped model {name!r} in {checkpoints_dir()}; shipped: {', '.join(names) or '(none)'}"
        )
    directory = checkpoints_dir() / name
    if (directory / CONFIG_FILE).is_file():
        return load_hooked_vit(directory)
    return load_hf(str(directory))


def _refuse_pickle_only(directory: Path) -> None:
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(
            f"{directory} holds only pickle weights ({', '.join(pickles)}); vitsae loads safetensors only "
            "(convert with `save_pretrained(..., safe_serialization=True)`)"
        )
    raise ValueError(f"{directory} holds no model.safetensors")


def _hf_file(target: str, filename: str) -> str | None:
    from transformers.utils import cached_file

    return cached_file(target, filename, local_files_only=True, _raise_exceptions_for_missing_entries=False)


def _hf_class(config: Any) -> tuple[type[nn.Module], bool]:
    """(transformers class to load, whether it converts to a HookedViT)."""
    import transformers

    architectures = list(getattr(config, "architectures", None) or [])
    for arch in architectures:
        if arch in CONVERTERS:
            return getattr(transformers, arch), True
    if config.model_type in _VIT_DEFAULTS:
        return getattr(transformers, _VIT_DEFAULTS[config.model_type]), True
    for arch in architectures:
        cls = getattr(transformers, arch, None)
        if cls is not None and getattr(cls, "main_input_name", None) == "pixel_values":
            return cls, False
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_MAPPING_NAMES,
    )

    for mapping in (MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES, MODEL_MAPPING_NAMES):
        cls = getattr(transformers, str(mapping.get(config.model_type)), None)
        if cls is not None and getattr(cls, "main_input_name", None) == "pixel_values":
            return cls, False
    raise ValueError(
        f"unsupported architecture {architectures or config.model_type!r}: not a vision model that takes "
        f"pixel_values; supported: {', '.join(sorted(CONVERTERS))}, and any transformers vision model "
        "(ResNet, ConvNeXt, ...) through the generic wrapper"
    )


def _drop_or_refuse_missing(ref: Any, target: str, missing: set[str]) -> None:
    """Weights absent from a checkpoint would be random: drop an optional pooler, refuse anything else.

    A ViTModel saved without its pooler (add_pooling_layer=False) is rebuilt with a random one by
    transformers; keeping it would make outputs and the weights hash differ from one load to the next.
    """
    pooler = {key for key in missing if key.startswith("pooler.")}
    if pooler and getattr(ref, "pooler", None) is not None:
        ref.pooler = None
        missing = missing - pooler
    if missing:
        raise ValueError(
            f"{target!r} lacks weights for {sorted(missing)}: transformers would initialise them at random; "
            "load the checkpoint with the architecture it was saved from"
        )


def load_hf(target: str) -> HookedModel:
    from transformers import AutoConfig

    local = Path(target)
    if local.is_dir():
        _refuse_pickle_only(local)
    try:
        config = AutoConfig.from_pretrained(target, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"cannot load a Hugging Face config from {target!r} (a local directory or a hub id already in "
            f"the cache; downloads are off): {err}"
        ) from err
    cls, is_vit = _hf_class(config)
    kwargs: dict[str, Any] = {}
    if config.model_type in ("clip", "siglip"):  # a full image-text model: load its vision tower only
        kwargs["config"] = config.vision_config
        if config.model_type == "clip":
            kwargs["config"].projection_dim = config.projection_dim
    try:
        ref, info = cls.from_pretrained(
            target, local_files_only=True, use_safetensors=True, output_loading_info=True, **kwargs
        )
    except OSError as err:
        raise ValueError(f"cannot load safetensors weights for {target!r}: {err}") from err
    _drop_or_refuse_missing(ref.eval(), target, set(info["missing_keys"]))
    vision = getattr(config, "vision_config", config)
    size = getattr(vision, "image_size", 224)
    fallback = (size, size) if isinstance(size, int) else tuple(size)
    processor_file = _hf_file(target, "preprocessor_config.json")
    if processor_file is not None:
        preprocess = preprocess_from_hf(read_json(processor_file), fallback)
    else:
        preprocess = default_preprocess(fallback)
    if is_vit:
        return hooked_vit_from_hf(ref, preprocess)
    return HookedModule(ref, preprocess, config=config.to_dict())


def load_timm(target: str) -> HookedModel:
    try:
        import timm
    except ImportError as err:
        raise ValueError(
            f"timm:{target} needs the optional `timm` package, which is not installed; `pip install timm` "
            "(or save the model with transformers and use hf:)"
        ) from err
    from safetensors.torch import load_file

    directory = Path(target)
    if not (directory / "config.json").is_file():
        raise ValueError(f"timm:{target} must be a directory with config.json and model.safetensors")
    _refuse_pickle_only(directory)
    meta = read_json(directory / "config.json")
    model = timm.create_model(
        meta["architecture"], pretrained=False, num_classes=meta.get("num_classes", 1000)
    )
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    cfg = meta.get("pretrained_cfg", {})
    _, height, width = cfg.get("input_size", (3, 224, 224))
    crop_pct = cfg.get("crop_pct", 1.0)
    resample = cfg.get("interpolation", "bicubic")
    preprocess = Preprocess(
        size=(height, width),
        resize_shortest_edge=int(height / crop_pct) if crop_pct < 1.0 else None,
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        resample=resample if resample in ("nearest", "bilinear", "bicubic") else "bicubic",
    )
    return HookedModule(model.eval(), preprocess, config=meta)


def load_module(target: str) -> HookedModel:
    module_path, sep, factory_name = target.partition(":")
    if not sep or not module_path or not factory_name:
        raise ValueError(f"module spec must be module:<python.path:factory>, got module:{target}")
    try:
        factory = getattr(importlib.import_module(module_path), factory_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot find factory {factory_name!r} in module {module_path!r}: {err}") from err
    model = factory()
    if isinstance(model, (HookedViT, HookedModule)):
        return model
    if not isinstance(model, nn.Module):
        raise ValueError(f"{target} returned a {type(model).__name__}, not a torch.nn.Module")
    preprocess = getattr(model, "preprocess", None)
    if not isinstance(preprocess, Preprocess):
        preprocess = default_preprocess()
    return HookedModule(model.eval(), preprocess, config={"module": target})
