"""`vitsae export --format saelens RUN_DIR --out DIR`: a trained SAE (or every SAE of a sweep) in SAELens'
format, `cfg.json` + `sae_weights.safetensors`, which SAELens' `SAE.load_from_disk` and vitsae's `load_sae`
both read. The SAE's `norm_scale` is folded into the weights, so the export takes raw activations."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vitsae.config import add_config_arguments, check_choices, config_from_args
from vitsae.errors import MissingFile
from vitsae.fileio import check_output_folder, read_json
from vitsae.sae.io import CONFIG_FILE, load_sae
from vitsae.sae.saelens import export_saelens


@dataclass(frozen=True)
class ExportConfig:
    """What `vitsae export` writes."""

    run_dir: Path = field(
        metadata={
            "help": "an SAE folder (sae.json), or a sweep folder (sweep.json: every SAE)",
            "positional": True,
        }
    )
    out: Path = field(default=Path(), metadata={"help": "output folder", "required": True})
    format: Literal["saelens"] = field(default="saelens", metadata={"help": "the format to write"})
    model_name: str = field(
        default="", metadata={"help": "model name to record (default: the SAE's model spec)"}
    )

    def __post_init__(self) -> None:
        check_choices(self)


def sae_folders(run_dir: Path) -> dict[str, Path]:
    """{name: SAE folder}: `run_dir` itself when it holds an SAE, else every run of its sweep."""
    if (run_dir / CONFIG_FILE).is_file():
        return {"": run_dir}
    if (run_dir / "sweep.json").is_file():
        return {name: run_dir / name for name in read_json(run_dir / "sweep.json", kind=dict)}
    raise MissingFile(f"{run_dir} holds neither {CONFIG_FILE} (an SAE) nor sweep.json (a training run)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ExportConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(ExportConfig, args)
    folders = sae_folders(cfg.run_dir)
    check_output_folder(cfg.out)
    for name, folder in folders.items():
        target = export_saelens(load_sae(folder), cfg.out / name, cfg.model_name)
        print(f"{folder} -> {target} ({cfg.format})")
    return 0
