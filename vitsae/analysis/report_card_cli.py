"""`vitsae report-card`: score one SAE, or every SAE of a sweep folder, against a random dictionary.

All SAEs share one pass over the images. Writes `report_card.json` (and the `dissection.json` it was
read from) into `--out` and prints one row per SAE, so a sweep's widths, k or l1 can be compared.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from vitsae.config import add_config_arguments, config_from_args, config_to_dict
from vitsae.fileio import write_json_atomic
from vitsae.sae.provenance import ALLOW_HELP

from .dissection import DissectConfig, DissectionError
from .dissection_cli import load_model_for
from .report_card import REPORT_CARD_JSON, ReportCardConfig, format_card, report_card


@dataclass(frozen=True)
class ReportCardRunConfig:
    """What `vitsae report-card` reads and where it writes."""

    sae: Path = field(metadata={"help": "an SAE directory, or a sweep folder of them (vitsae train --out)"})
    source: str = field(
        metadata={"help": "images with concept masks: shapes:<n>[:seed[:size]], masks:<dir> or such a <dir>"}
    )
    out: Path = field(metadata={"help": "folder for report_card.json and dissection.{json,safetensors}"})
    model: str = field(
        default="", metadata={"help": "model spec (default: the one the SAEs were trained on)"}
    )
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    allow_other_model: bool = field(default=False, metadata={"help": ALLOW_HELP})


def sae_directories(path: Path) -> dict[str, Path]:
    """{name: directory}: `path` itself when it is an SAE, else its sub-folders that are."""
    if (path / "sae.json").is_file():
        return {path.name: path}
    if not path.is_dir():
        raise DissectionError(f"{path} is neither an SAE folder (sae.json) nor a folder of them")
    found = {p.name: p for p in sorted(path.iterdir()) if (p / "sae.json").is_file()}
    if not found:
        raise DissectionError(f"{path} holds no SAE folders (sub-folders with sae.json)")
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ReportCardRunConfig)
    add_config_arguments(parser, ReportCardConfig)
    add_config_arguments(parser, DissectConfig)


def run(args: argparse.Namespace) -> int:
    from vitsae.data.concepts import open_concept_source
    from vitsae.sae.io import load_sae

    cfg = config_from_args(ReportCardRunConfig, args)
    card_cfg = config_from_args(ReportCardConfig, args)
    dcfg = config_from_args(DissectConfig, args)
    source = open_concept_source(cfg.source)
    saes = {name: load_sae(path, device=cfg.device) for name, path in sae_directories(cfg.sae).items()}
    first_name, first = next(iter(saes.items()))
    hooks = {name: sae.cfg.hook_name for name, sae in saes.items()}
    if len(set(hooks.values())) != 1:
        raise DissectionError(
            f"the SAEs read different hooks {hooks}; a report card compares SAEs of one hook"
        )
    hook = first.cfg.hook_name
    first_path = cfg.sae / first_name
    model, spec, _ = load_model_for(saes, hook, cfg.model, first_path, cfg.device, cfg.allow_other_model)
    meta = {"model": spec, "hook": hook, "saes": str(cfg.sae.resolve()), "source": source.describe()}
    meta["config"] = config_to_dict(card_cfg)
    card, dissection = report_card(
        saes,
        model,
        hook,
        source,
        dcfg,
        card_cfg,
        batch_size=cfg.batch_size,
        device=cfg.device,
        progress=cfg.progress,
        meta=meta,
    )
    dissection.save(cfg.out)
    write_json_atomic(cfg.out / REPORT_CARD_JSON, card)
    print(format_card(card, dcfg.iou_levels))
    print(f"-> {cfg.out / REPORT_CARD_JSON}")
    return 0
