"""Native HookedViT format: `hooked_vit.json` (format, version, config, preprocess) + `model.safetensors`."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from vitsae.config import config_from_dict, config_to_dict
from vitsae.data.preprocess import Preprocess
from vitsae.fileio import read_json, save_tensors_atomic, write_json_atomic
from vitsae.models.config import HookedViTConfig
from vitsae.models.vit import HookedViT

FORMAT = "vitsae.hooked_vit"
VERSION = 1
CONFIG_FILE = "hooked_vit.json"
WEIGHTS_FILE = "model.safetensors"


def save_hooked_vit(model: HookedViT, directory: str | Path) -> Path:
    """Write `model` to `directory` (created if needed); weights first, so the JSON marks a complete save."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(directory / WEIGHTS_FILE, model.state_dict())
    write_json_atomic(
        directory / CONFIG_FILE,
        {
            "format": FORMAT,
            "version": VERSION,
            "config": config_to_dict(model.cfg),
            "preprocess": config_to_dict(model.preprocess),
        },
    )
    return directory


def load_hooked_vit(directory: str | Path) -> HookedViT:
    """Read a directory written by `save_hooked_vit` (safetensors only; no pickle)."""
    directory = Path(directory)
    meta = read_json(directory / CONFIG_FILE)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{directory / CONFIG_FILE} is format {meta.get('format')!r} version {meta.get('version')!r}; "
            f"expected {FORMAT!r} version {VERSION}"
        )
    model = HookedViT(
        config_from_dict(HookedViTConfig, meta["config"]), config_from_dict(Preprocess, meta["preprocess"])
    )
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return model.eval()
