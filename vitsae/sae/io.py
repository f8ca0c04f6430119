"""Saving and loading SAEs: `sae.safetensors` + `sae.json` (config and training summary) in one folder.

Only safetensors are read: a pickle-based file (`fileio.PICKLE_SUFFIXES`: .pt, .pth, .pkl, .bin, ...) is
refused with an error, since loading one can run arbitrary code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vitsae.config import config_from_dict, config_to_dict
from vitsae.errors import InvalidValue, MissingFile
from vitsae.fileio import (
    PICKLE_SUFFIXES,
    damaged,
    load_safetensors,
    read_json,
    save_tensors_atomic,
    write_json_atomic,
)
from vitsae.sae.config import SAEConfig
from vitsae.sae.model import SparseAutoencoder
from vitsae.sae.saelens import SAELENS_CONFIG, SAELENS_WEIGHTS, load_saelens

RETRAIN = "retrain it (rerun the `vitsae train` command that made it) or copy it again"
FORMAT = "vitsae.sae"
FORMAT_VERSION = 1
WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "sae.json"


def save_sae(sae: SparseAutoencoder, directory: str | Path, training_summary: dict[str, Any] | None = None):
    """Write the SAE's weights and config (with an optional training summary) into `directory`."""
    directory = Path(directory)
    save_tensors_atomic(directory / WEIGHTS_FILE, sae.state_dict())
    write_json_atomic(
        directory / CONFIG_FILE,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": config_to_dict(sae.cfg),
            "training_summary": training_summary or {},
        },
    )
    return directory


def _resolve_directory(path: Path) -> Path:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise InvalidValue(
            f"{path}: refusing to load a {path.suffix} file; vitsae loads SAEs only from safetensors "
            f"({WEIGHTS_FILE} + {CONFIG_FILE}), since pickle files can run arbitrary code"
        )
    if path.is_dir():
        return path
    if path.name in (WEIGHTS_FILE, CONFIG_FILE, SAELENS_CONFIG, SAELENS_WEIGHTS):
        return path.parent
    raise MissingFile(
        f"{path}: expected a folder holding {WEIGHTS_FILE} and {CONFIG_FILE} (or SAELens' "
        f"{SAELENS_CONFIG} and {SAELENS_WEIGHTS})"
    )


def read_sae_metadata(path: str | Path) -> dict[str, Any]:
    """The `sae.json` of a saved SAE (format, config, training summary)."""
    meta = read_json(_resolve_directory(Path(path)) / CONFIG_FILE, RETRAIN, dict)
    if meta.get("format") != FORMAT:
        raise InvalidValue(f"{path}: not a vitsae SAE (format {meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise InvalidValue(
            f"{path}: SAE format version {meta['format_version']} is newer than this vitsae reads "
            f"({FORMAT_VERSION}); upgrade vitsae"
        )
    if not isinstance(meta.get("config"), dict):
        raise damaged(Path(path) / CONFIG_FILE, "it holds no SAE config", RETRAIN)
    return meta


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load an SAE saved by `save_sae` (a folder, or the path of its .safetensors/.json) in eval mode, or one
    in SAELens' format (a folder of `cfg.json` + `sae_weights.safetensors`, as `export_saelens` writes)."""
    directory = _resolve_directory(Path(path))
    if not (directory / CONFIG_FILE).exists() and (directory / SAELENS_CONFIG).is_file():
        return load_saelens(directory).to(device).eval()
    meta = read_sae_metadata(directory)
    try:
        cfg = config_from_dict(SAEConfig, meta["config"])
    except (TypeError, ValueError) as err:
        raise damaged(directory / CONFIG_FILE, f"its SAE config is unusable ({err})", RETRAIN) from err
    sae = SparseAutoencoder(cfg)
    tensors = load_safetensors(directory / WEIGHTS_FILE, RETRAIN)
    expected = {name: tuple(t.shape) for name, t in sae.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != found:
        raise InvalidValue(
            f"{directory / WEIGHTS_FILE}: tensors {found} do not match the config's {expected}; {RETRAIN}"
        )
    sae.load_state_dict(tensors)
    return sae.to(device).eval()
