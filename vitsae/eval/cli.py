"""`vitsae eval`: reconstruction and spliced-model metrics of one or several SAEs (or a sweep folder) over
an image source, in one pass; writes `<out>/eval.json` (format `vitsae.eval`) and prints a table."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vitsae.config import add_config_arguments, config_from_args, config_to_dict
from vitsae.data.open import open_source
from vitsae.edit.cli import add_repeatable, check_out, model_folder, provenance
from vitsae.edit.inputs import InputError, image_batches, load_sites
from vitsae.eval.spliced import EvalError, evaluate_spliced
from vitsae.fileio import write_json_atomic
from vitsae.models import load
from vitsae.sae.provenance import ALLOW_HELP, check_sae_model

FORMAT = "vitsae.eval"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class EvalConfig:
    """Options of one `vitsae eval` run."""

    model: str = field(
        metadata={"help": "model spec: hf:<dir>, timm:<dir>, vitsae:<name>, module:<path:factory>"}
    )
    sae: tuple[str, ...] = field(
        metadata={"help": "SAE folder(s), or a `vitsae train` output folder with several runs; repeatable"}
    )
    source: str = field(metadata={"help": "images: a folder, hf:<dir>[@split], or shapes:<n>[:seed[:size]]"})
    out: Path = field(metadata={"help": "output folder for eval.json"})
    images: int = field(default=512, metadata={"help": "images to evaluate on"})
    batch_size: int = field(default=32, metadata={"help": "images per forward pass"})
    output: Literal["auto", "logits", "embedding"] = field(
        default="auto",
        metadata={
            "help": "the model's output: class logits (accuracy, KL) or an embedding (cosine); auto: "
            "logits when the source has labels"
        },
    )
    accuracy: Literal["auto", "on", "off"] = field(
        default="auto", metadata={"help": "top-1 accuracy: when labels exist (auto), required (on), or not"}
    )
    device: str = field(default="cpu", metadata={"help": "torch device"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    allow_other_model: bool = field(default=False, metadata={"help": ALLOW_HELP})

    def __post_init__(self) -> None:
        if self.output not in ("auto", "logits", "embedding"):
            raise EvalError(f"unknown --output {self.output!r}; valid: auto, logits, embedding")
        if self.accuracy not in ("auto", "on", "off"):
            raise EvalError(f"unknown --accuracy {self.accuracy!r}; valid: auto, on, off")
        if self.images < 1 or self.batch_size < 1:
            raise EvalError(f"--images and --batch-size must be >= 1, got {self.images}, {self.batch_size}")


def sae_folders(paths: tuple[str, ...]) -> list[str]:
    """Each path as given when it holds `sae.json`, else its sub-folders that do (a sweep), sorted."""
    out = []
    for path in map(Path, paths):
        if (path / "sae.json").is_file() or not path.is_dir():
            out.append(str(path))
            continue
        runs = sorted(str(p.parent) for p in path.glob("*/sae.json"))
        if not runs:
            raise InputError(f"--sae {path}: neither an SAE folder (sae.json) nor a folder of SAE runs")
        out.extend(runs)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, EvalConfig, skip=("sae",))
    add_repeatable(parser, EvalConfig, "sae", required=True)


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict, names: list[str]) -> None:
    logits = result["output"] == "logits"
    base = result["original"]
    head = f"{'sae':<28} {'hook':<26} {'L0':>6} {'FVU':>6} {'dead':>5}"
    head += (
        f" {'acc':>6} {'agree':>6} {'KL':>7} {'KL zero':>7} {'KL mean':>7} {'KLrec0':>6} {'KLrecM':>6}"
        if logits
        else ""
    )
    head += f" {'cos':>6} {'cos0':>6} {'cosM':>6}"
    print(head)
    if "accuracy" in base:
        print(f"original model accuracy {base['accuracy']:.4f} over {result['n_images']} images")
    for name, row in zip(names, result["saes"], strict=True):
        r = row["reconstruction"]
        line = f"{name[-28:]:<28} {row['hook'][-26:]:<26} {r['l0']:>6.1f} {r['fvu']:>6.3f}"
        line += f" {r['never_fired_fraction']:>5.2f}"
        if logits:
            s, z, m, rec = row["spliced"], row["zero_ablation"], row["mean_ablation"], row["recovered"]
            line += (
                f" {_fmt(s.get('accuracy')):>6} {s['agreement']:>6.3f} {s['kl']:>7.4f}"
                f" {z['kl']:>7.3f} {m['kl']:>7.3f}"
                f" {_fmt(rec['kl_zero_ablation']):>6} {_fmt(rec['kl_mean_ablation']):>6}"
            )
        line += (
            f" {row['spliced']['output_cosine']:>6.3f} {row['zero_ablation']['output_cosine']:>6.3f}"
            f" {row['mean_ablation']['output_cosine']:>6.3f}"
        )
        print(line)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(EvalConfig, args)
    folders = sae_folders(cfg.sae)
    check_out(cfg.out, [model_folder(cfg.model), *folders])
    model = load(cfg.model, device=cfg.device)
    source = open_source(cfg.source)
    if len(source) == 0:
        raise EvalError(f"source {cfg.source!r} has no images")
    sites = load_sites(folders, cfg.device)
    saes = {str(folder): site.sae.cfg for folder, site in zip(folders, sites, strict=True)}
    check_sae_model(saes, model, cfg.model, cfg.allow_other_model)
    has_labels = source[0].label is not None
    logits = cfg.output == "logits" or (cfg.output == "auto" and has_labels)
    if cfg.accuracy == "on" and not has_labels:
        raise EvalError(f"--accuracy on, but source {cfg.source!r} has no labels (its first image has none)")
    if cfg.accuracy == "on" and not logits:
        raise EvalError("--accuracy on needs --output logits")
    accuracy = logits and (cfg.accuracy == "on" or (cfg.accuracy == "auto" and has_labels))
    batches = image_batches(source, model.preprocess, cfg.images, cfg.batch_size)
    total = min(cfg.images, len(source))
    result = evaluate_spliced(model, sites, batches, logits, accuracy, cfg.progress, total)
    for folder, row in zip(folders, result["saes"], strict=True):
        row["sae"] = str(Path(folder).resolve())
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config_to_dict(cfg),
        "provenance": provenance(cfg.model, folders, model, sites, source),
        "results": result,
    }
    write_json_atomic(cfg.out / "eval.json", record)
    print_table(result, [Path(f).name for f in folders])
    print(f"-> {cfg.out / 'eval.json'}")
    return 0
