"""`vitsae edit`: apply feature edits over an image source and measure them against controls, or
(`--explain CLASS`) rank the features that drive a class and confirm the top ones by ablation.

Writes `<out>/edit.json` (format `vitsae.edit`) and `<out>/before_after.png`, or `<out>/explain.json`
(format `vitsae.explain`); see docs/edit.md. Nothing is written into the model's or the SAEs' folders.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from vitsae.config import add_config_arguments, config_from_args, config_to_dict
from vitsae.data.open import open_source
from vitsae.edit.config import EditConfig
from vitsae.edit.edits import EditError, edits_to_json
from vitsae.edit.finder import explain
from vitsae.edit.inputs import InputError, class_names, image_batches, load_sites, output_width, resolve_class
from vitsae.edit.measure import measure_edit
from vitsae.edit.picture import before_after_figure
from vitsae.fileio import write_json_atomic
from vitsae.models import checkpoints_dir, load
from vitsae.sae.provenance import check_sae_model

EDIT_FORMAT = "vitsae.edit"
EXPLAIN_FORMAT = "vitsae.explain"
FORMAT_VERSION = 1
CONDITIONS = ("edit", "random_features", "random_directions")


def add_repeatable(parser: argparse.ArgumentParser, cls: type, name: str, required: bool) -> None:
    """A tuple field of `cls` as a flag that may be repeated (`--sae A --sae B`), help from its metadata."""
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    parser.add_argument(
        "--" + name.replace("_", "-"),
        dest=name,
        action="extend",
        nargs="+",
        required=required,
        default=[] if not required else None,
        help=spec.metadata.get("help", ""),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, EditConfig, skip=("sae", "stats"))
    add_repeatable(parser, EditConfig, "sae", required=True)
    add_repeatable(parser, EditConfig, "stats", required=False)


def model_folder(spec: str) -> str:
    """The folder a model spec loads from (`hf:<dir>`, `timm:<dir>`, a shipped `vitsae:<name>`), else ""."""
    scheme, _, target = spec.partition(":")
    if scheme == "vitsae" and target:
        return str(checkpoints_dir() / target)
    return target if scheme in ("hf", "timm") else ""


def check_out(out: Path, protected: list[str]) -> None:
    """Refuse an output folder inside the model's or an SAE's folder (those are never written)."""
    resolved = out.resolve()
    for directory in filter(None, protected):
        path = Path(directory).resolve()
        if path.is_dir() and (resolved == path or path in resolved.parents):
            raise InputError(
                f"--out {out} is inside {directory}: write results elsewhere (inputs are read-only)"
            )


def provenance(model_spec: str, sae_dirs, model, sites, source) -> dict:
    """Model (spec, weights hash), SAEs (folder, hook, size, training store) and source description."""
    return {
        "model": {"spec": model_spec, "weights_hash": model.weights_hash()},
        "saes": [
            {
                "path": str(Path(path).resolve()),
                "hook_name": site.sae.cfg.hook_name,
                "architecture": site.sae.cfg.architecture,
                "d_sae": site.sae.cfg.d_sae,
                "store": site.sae.cfg.store,
            }
            for path, site in zip(sae_dirs, sites, strict=True)
        ],
        "source": source.describe(),
    }


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_edit_table(results: dict, names: list[str]) -> None:
    print(
        f"{'condition':<18} {'images':>6} {'target':>6} {'changed':>8} "
        f"{'target chg':>10} {'off-target chg':>14}"
    )
    for condition in CONDITIONS:
        if condition not in results:
            continue
        r = results[condition]
        rate = r["prediction_change_rate"]
        print(
            f"{condition:<18} {r['n_images']:>6} {r['n_target']:>6} {_fmt(rate['all']):>8} "
            f"{_fmt(rate['target']):>10} {_fmt(rate['off_target']):>14}"
        )
    moved = results["edit"]["moved_to"]["target"]
    if moved:
        print("edited predictions moved to: " + ", ".join(f"{c} {n}" for c, n in sorted(moved.items())))
    change = results["edit"]["mean_logit_change"]["target"]
    if change and change[names[0]] is not None:
        ordered = sorted(change.items(), key=lambda kv: kv[1])
        print("mean logit change on target images: " + ", ".join(f"{c} {v:+.3f}" for c, v in ordered))


def print_explain_table(result: dict, names: list[str]) -> None:
    print(f"features driving class {names[result['target_class']]} over {result['n_images']} images")
    print(
        f"{'rank':>4} {'hook':<28} {'feature':>7} {'attribution':>11} "
        f"{'ablation dlogit':>15} {'predicted':>15}"
    )
    for row in result["ranking"]:
        abl = row.get("ablation")
        measured = "-" if abl is None else f"{abl['mean_logit_change']:+.4f}"
        pred = "-" if abl is None else f"{abl['predicted_before']:.2f}->{abl['predicted_after']:.2f}"
        print(
            f"{row['rank']:>4} {row['hook']:<28} {row['feature']:>7} {row['attribution']:>11.4f} "
            f"{measured:>15} {pred:>15}"
        )
    together = result["together"]
    if together["ablation"] is not None:
        abl = together["ablation"]
        print(
            f"top {sum(len(f) for f in together['features'].values())} together: linear estimate "
            f"{together['linear_estimate']:+.4f}, measured {abl['mean_logit_change']:+.4f}, "
            "predicted as the class "
            f"{abl['predicted_before']:.2f} -> {abl['predicted_after']:.2f}"
        )


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(EditConfig, args)
    check_out(cfg.out, [model_folder(cfg.model), *cfg.sae, *cfg.stats])
    model = load(cfg.model, device=cfg.device)
    source = open_source(cfg.source)
    sites = load_sites(cfg.sae, cfg.device, cfg.stats)
    saes = {str(folder): site.sae.cfg for folder, site in zip(cfg.sae, sites, strict=True)}
    check_sae_model(saes, model, cfg.model, cfg.allow_other_model)
    names = class_names(source, output_width(model, model.preprocess))
    only = resolve_class(cfg.only_class, names) if cfg.only_class else None
    batches = image_batches(source, model.preprocess, cfg.images, cfg.batch_size, only)
    total = min(cfg.images, len(source)) if only is None else None
    record = {
        "format_version": FORMAT_VERSION,
        "config": config_to_dict(cfg),
        "provenance": provenance(cfg.model, cfg.sae, model, sites, source),
    }
    if cfg.explain:
        target = resolve_class(cfg.explain, names)
        result = explain(model, sites, target, batches, cfg.top, cfg.confirm, cfg.progress, total)
        result["target_class_name"] = names[target]
        write_json_atomic(cfg.out / "explain.json", {"format": EXPLAIN_FORMAT, **record, "results": result})
        print_explain_table(result, names)
        print(f"-> {cfg.out / 'explain.json'}")
        return 0
    edits = cfg.edits()
    donor = None
    if cfg.patch:
        if not 0 <= cfg.donor < len(source):
            raise EditError(f"--donor {cfg.donor} is not an index of the source's {len(source)} images")
        donor = model.preprocess(source[cfg.donor].image)[None].to(cfg.device)
    results = measure_edit(
        model, sites, edits, batches, names, cfg.seed, cfg.controls, donor, cfg.progress, total
    )
    tallies = results.pop("_tallies")
    write_json_atomic(
        cfg.out / "edit.json",
        {
            "format": EDIT_FORMAT,
            **record,
            "edits": edits_to_json(edits),
            "class_names": names,
            "results": results,
        },
    )
    rows = _picture_rows(tallies["edit"])
    if rows:
        before_after_figure(source, rows, names, cfg.out / "before_after.png")
    print_edit_table(results, names)
    print(
        f"-> {cfg.out / 'edit.json'}"
        + (f", {cfg.out / 'before_after.png'}" if rows else " (no image was edited)")
    )
    return 0


def _picture_rows(tally, n: int = 6) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """Up to `n` target images, those whose prediction changed first."""
    before, after = torch.cat(tally.before), torch.cat(tally.after)
    target, indices = torch.cat(tally.target), torch.cat(tally.indices)
    changed = before.argmax(1) != after.argmax(1)
    order = [i for i in range(len(indices)) if target[i] and changed[i]]
    order += [i for i in range(len(indices)) if target[i] and not changed[i]]
    return [(int(indices[i]), before[i], after[i]) for i in order[:n]]
