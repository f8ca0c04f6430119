"""`load(spec)`: a hooked model from a spec string.

- `hf:<local dir or cached hub id>`: transformers ViT / CLIP / DINOv2 / SigLIP become a HookedViT; other
  vision models (ResNet, ConvNeXt, ...) are wrapped in a HookedModule. Local files only.
- `timm:<dir>`: a timm model saved as `config.json` (architecture, num_classes, pretrained_cfg) +
  `model.safetensors`, wrapped in a HookedModule; needs the optional `timm` package.
- `vitsae:<name>`: a model shipped under `checkpoints/<name>/` (or `$VITSAE_CHECKPOINTS/<name>/`), either
  the native HookedViT format or a Hugging Face `save_pretrained` directory.
- `module:<python.path:factory>`: `factory()` returns your nn.Module (optionally with a `preprocess`).
- `random:<spec>`: the model of `spec` with its weights redrawn (seed 0; `vitsae.models.randomize`), for
  the randomised-model sanity check.

Weights are read from safetensors only; pickle checkpoints are refused.

Trust: a `module:` spec imports and runs Python code, so it is loaded only when the user gives it (on the
command line or in Python, to `load`). A spec read from a file (a store's manifest, an SAE's `sae.json`,
statistics) is reopened through `load_recorded`, which refuses one that would run code and says which
`--model` to pass instead.
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
from vitsae.errors import InvalidValue, MissingFile
from vitsae.fileio import PICKLE_SUFFIXES, read_json
from vitsae.models.convert_hf import CONVERTERS, hooked_vit_from_hf
from vitsae.models.hf_preprocess import preprocess_from_hf
from vitsae.models.io import CONFIG_FILE, load_hooked_vit
from vitsae.models.protocol import HookedModel
from vitsae.models.vit import HookedViT
from vitsae.models.wrap import HookedModule, default_preprocess

SCHEMES = ("hf", "timm", "vitsae", "module", "random")

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
        raise InvalidValue(
            f"unknown model spec {spec!r}; use one of: hf:<local dir or cached hub id>, timm:<dir>, "
            f"vitsae:<shipped name>, module:<python.path:factory>, random:<one of these>"
        )
    if scheme == "random":
        from vitsae.models.randomize import randomized

        return randomized(load(target, device, dtype)).eval()
    loaders = {"hf": load_hf, "timm": load_timm, "vitsae": load_shipped, "module": load_module}
    model = loaders[scheme](target)
    return model.to(device=device, dtype=dtype).eval()


class UntrustedModelSpec(InvalidValue):
    """A model spec read from a file would import and run code; only a spec the user gives may."""


def runs_code(spec: str) -> bool:
    """Whether loading `spec` imports Python code named in it (`module:`, also under `random:`)."""
    scheme, _, target = spec.partition(":")
    while scheme == "random":
        scheme, _, target = target.partition(":")
    return scheme == "module"


def recorded_spec(recorded: str | None, where: str) -> str:
    """`recorded`, a model spec read from the file `where`, if it may be reopened: it names a model and
    runs no code. Otherwise an error saying which `--model` to pass."""
    if not recorded or recorded == "none":
        raise InvalidValue(f"{where} records no model spec; pass --model")
    if runs_code(recorded):
        raise UntrustedModelSpec(
            f"{where} records the model {recorded!r}, which would import and run Python code; vitsae does "
            f"not run code named in a file: pass --model {recorded} yourself if you trust it"
        )
    return recorded


def load_recorded(
    recorded: str | None,
    user_spec: str | None,
    where: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> HookedModel:
    """The model a command reopens: `user_spec` when the user gave one (trusted, any scheme), else the spec
    `recorded` in the file `where`, checked by `recorded_spec` (never a `module:` spec)."""
    if user_spec:
        return load(user_spec, device, dtype)
    return load(recorded_spec(recorded, where), device, dtype)


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
        raise InvalidValue(
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
        raise InvalidValue(
            f"{directory} holds only pickle weights ({', '.join(pickles)}); vitsae loads safetensors only "
            "(convert with `save_pretrained(..., safe_serialization=True)`)"
        )
    raise InvalidValue(f"{directory} holds no model.safetensors")


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
    raise InvalidValue(
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
        raise InvalidValue(
            f"{target!r} lacks weights for {sorted(missing)}: transformers would initialise them at random; "
            "load the checkpoint with the architecture it was saved from"
        )


def _looks_like_path(target: str) -> bool:
    """Whether an hf: target is meant as a folder rather than a hub id `org/name` (which has one `/`)."""
    return target.startswith(("/", ".", "~")) or target.count("/") > 1 or Path(target.split("/")[0]).is_dir()


def load_hf(target: str) -> HookedModel:
    from transformers import AutoConfig

    local = Path(target).expanduser()
    if local.is_dir():
        _refuse_pickle_only(local)
    elif _looks_like_path(target):
        raise MissingFile(
            f"hf:{target}: no such directory {local}; give a folder saved with save_pretrained, or a hub id "
            "(org/name) already in the Hugging Face cache"
        )
    try:
        config = AutoConfig.from_pretrained(target, local_files_only=True)
    except (OSError, ValueError) as err:
        raise InvalidValue(
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
        raise InvalidValue(f"cannot load safetensors weights for {target!r}: {err}") from err
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
        raise InvalidValue(
            f"timm:{target} needs the optional `timm` package, which is not installed; `pip install timm` "
            "(or save the model with transformers and use hf:)"
        ) from err
    from safetensors.torch import load_file

    directory = Path(target)
    if not (directory / "config.json").is_file():
        raise InvalidValue(f"timm:{target} must be a directory with config.json and model.safetensors")
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
        raise InvalidValue(f"module spec must be module:<python.path:factory>, got module:{target}")
    try:
        factory = getattr(importlib.import_module(module_path), factory_name)
    except (ImportError, AttributeError) as err:
        raise InvalidValue(f"cannot find factory {factory_name!r} in module {module_path!r}: {err}") from err
    model = factory()
    if isinstance(model, (HookedViT, HookedModule)):
        return model
    if not isinstance(model, nn.Module):
        raise InvalidValue(f"{target} returned a {type(model).__name__}, not a torch.nn.Module")
    preprocess = getattr(model, "preprocess", None)
    if not isinstance(preprocess, Preprocess):
        preprocess = default_preprocess()
    return HookedModule(model.eval(), preprocess, config={"module": target})
