"""Edit values in units of a feature's observed activations, read from a `vitsae stats` folder.

`unit="max"`: multiples of the feature's largest activation (`max_act_F`); `unit="quantile"`: of the
q-quantile of its firing activations, taken from the statistics' uniform sample of firing tokens
(`sample_value_FS`, unused slots marked by `sample_image_FS < 0`). The files are read as data
(safetensors + JSON, format `vitsae.feature_stats`), so this stage does not depend on `analysis`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from vitsae.edit.edits import EditError, FeatureEdit
from vitsae.fileio import read_json

STATS_META = "feature_stats.json"
STATS_TENSORS = "feature_stats.safetensors"


def _read(stats_dir: Path, names: tuple[str, ...], n_features: int) -> dict[str, torch.Tensor]:
    meta_path = stats_dir / STATS_META
    if not meta_path.is_file():
        raise EditError(f"{stats_dir}: no {STATS_META}; give the output folder of `vitsae stats`")
    meta = read_json(meta_path)
    if meta.get("format") != "vitsae.feature_stats":
        raise EditError(f"{meta_path}: format {meta.get('format')!r}, expected 'vitsae.feature_stats'")
    if meta.get("n_features") != n_features:
        raise EditError(
            f"{stats_dir}: statistics of {meta.get('n_features')} features, but the SAE has {n_features}"
        )
    with safe_open(str(stats_dir / STATS_TENSORS), framework="pt") as tensors:
        return {name: tensors.get_tensor(name) for name in names}


def feature_scales(edit: FeatureEdit, stats_dir: Path | None, n_features: int) -> torch.Tensor:
    """[E] float32: what `edit.value` is multiplied by for each of its features (1 in absolute units)."""
    n_edit = len(edit.features)
    if edit.unit == "absolute" or edit.op in ("ablate", "scale", "patch"):
        return torch.ones(n_edit)
    if stats_dir is None:
        raise EditError(
            f"a {edit.op} edit in {edit.unit!r} units needs the SAE's `vitsae stats` folder (--stats)"
        )
    features = torch.tensor(edit.features, dtype=torch.long)
    if edit.unit == "max":
        return _read(Path(stats_dir), ("max_act_F",), n_features)["max_act_F"][features].float()
    tensors = _read(Path(stats_dir), ("sample_value_FS", "sample_image_FS"), n_features)
    out = torch.empty(n_edit)
    for i, feature in enumerate(edit.features):
        values = tensors["sample_value_FS"][feature][tensors["sample_image_FS"][feature] >= 0]
        if values.numel() == 0:
            raise EditError(f"feature {feature} never fired in {stats_dir}: it has no quantile to scale by")
        out[i] = torch.quantile(values.double(), edit.quantile).float()
    return out
