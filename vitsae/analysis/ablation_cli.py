"""`vitsae ablation`: ablate each feature on its own top images and write `ablation_effects.json` into the
statistics folder, for the browser's feature pages (see `vitsae/analysis/ablation.py`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vitsae.analysis.ablation import ablation_effects
from vitsae.analysis.ablation_file import write_ablation_effects
from vitsae.analysis.stats import STATS_META, FeatureStats
from vitsae.config import add_config_arguments, config_from_args, config_from_dict
from vitsae.data.open import source_from_description
from vitsae.data.preprocess import Preprocess
from vitsae.edit import SpliceSite
from vitsae.edit.inputs import class_names, output_width
from vitsae.errors import VitsaeError
from vitsae.models import load_recorded
from vitsae.sae.io import load_sae
from vitsae.sae.provenance import ALLOW_HELP, check_sae_model


class AblationError(VitsaeError):
    """Statistics that do not say enough (no source, model or SAE recorded) to measure ablations."""


@dataclass(frozen=True)
class AblationConfig:
    """Options of `vitsae ablation`."""

    stats: Path = field(metadata={"help": "folder written by `vitsae stats` (the result is added there)"})
    model: str = field(default="", metadata={"help": "model spec (default: the one the statistics record)"})
    sae: str = field(default="", metadata={"help": "SAE folder (default: the one the statistics record)"})
    features: tuple[int, ...] = field(
        default=(), metadata={"help": "only these features (default: every live one)"}
    )
    images_per_feature: int = field(default=8, metadata={"help": "top images each feature is ablated on"})
    batch_images: int = field(
        default=64,
        metadata={
            "help": "images per forward; the pass holds their dense codes (images x tokens x features)"
        },
    )
    device: str = field(default="cpu", metadata={"help": "torch device"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    allow_other_model: bool = field(default=False, metadata={"help": ALLOW_HELP})

    def __post_init__(self) -> None:
        if self.images_per_feature < 1 or self.batch_images < 1:
            raise AblationError(
                f"--images-per-feature and --batch-images must be >= 1, got {self.images_per_feature}, "
                f"{self.batch_images}"
            )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, AblationConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(AblationConfig, args)
    stats = FeatureStats.load(cfg.stats)
    meta = stats.meta
    sae_dir = cfg.sae or meta.get("sae")
    if not sae_dir:
        raise AblationError(f"{cfg.stats} records no SAE folder: pass --sae")
    if not meta.get("source"):
        raise AblationError(f"{cfg.stats} records no image source: its top images cannot be found again")
    spec = cfg.model or (meta.get("model") or {}).get("spec")
    model = load_recorded(spec, cfg.model, str(cfg.stats / STATS_META), device=cfg.device)
    sae = load_sae(sae_dir, device=cfg.device)
    check_sae_model({str(sae_dir): sae.cfg}, model, spec, cfg.allow_other_model)
    if sae.cfg.d_sae != stats.n_features:
        raise AblationError(f"SAE {sae_dir} has {sae.cfg.d_sae} features, the statistics {stats.n_features}")
    source = source_from_description(meta["source"])
    preprocess = meta.get("preprocess")
    preprocess = model.preprocess if preprocess is None else config_from_dict(Preprocess, preprocess)
    features = list(cfg.features) or torch.nonzero(stats.fire_count_F > 0).squeeze(1).tolist()
    bad = [f for f in features if not 0 <= f < stats.n_features]
    if bad:
        raise AblationError(f"features {bad} out of range: the SAE has {stats.n_features}")
    site = SpliceSite(sae, hook_name=meta.get("hook") or "")
    effects = ablation_effects(
        model, site, stats, source, preprocess, features, cfg.images_per_feature, cfg.progress
    )
    record = {
        "model": spec,
        "sae": str(Path(sae_dir).resolve()),
        "hook": site.hook_name or sae.cfg.hook_name,
        "images_per_feature": cfg.images_per_feature,
        "class_names": class_names(source, output_width(model, preprocess)),
        "features": effects,
    }
    path = write_ablation_effects(cfg.stats, record)
    moved = sum(1 for e in effects.values() if e["n_changed"])
    print(f"{len(effects)} features ablated on their top images; {moved} move a prediction -> {path}")
    return 0
