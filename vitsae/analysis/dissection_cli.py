"""`vitsae dissect`: Network Dissection of an SAE's features against concept masks, with its baselines.

One pass over the images runs the model, the hook and the SAE (and, when asked, the raw units of the hook,
a random rotation of them, and an SAE trained on a randomly re-initialised copy of the model) and writes
`dissection.json` + `dissection.safetensors` into `--out` (a statistics folder, so the browser finds them).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitsae.config import add_config_arguments, config_from_args, config_to_dict
from vitsae.sae.provenance import ALLOW_HELP, check_sae_model

from .dissection import (
    DenseBasis,
    DissectConfig,
    Dissection,
    DissectionError,
    Run,
    SAEBasis,
    check_sae_for_hook,
    dissect,
    random_rotation,
    thresholds_from_stats,
)


@dataclass(frozen=True)
class DissectRunConfig:
    """What `vitsae dissect` reads and where it writes."""

    sae: Path = field(metadata={"help": "trained SAE directory"})
    source: str = field(
        metadata={"help": "images with concept masks: shapes:<n>[:seed[:size]], masks:<dir> or such a <dir>"}
    )
    out: Path = field(metadata={"help": "folder for dissection.{json,safetensors} (e.g. the stats folder)"})
    model: str = field(default="", metadata={"help": "model spec (default: the one the SAE was trained on)"})
    stats: Path | None = field(
        default=None,
        metadata={"help": "a vitsae stats folder of this SAE: its histograms set the thresholds"},
    )
    baselines: bool = field(
        default=True, metadata={"help": "also dissect the hook's raw units and a random rotation of them"}
    )
    randomized_sae: Path | None = field(
        default=None,
        metadata={
            "help": "an SAE trained on the randomised model (harvest --model random:<spec>): "
            "dissected beside the trained model's SAE as the sanity check"
        },
    )
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    allow_other_model: bool = field(default=False, metadata={"help": ALLOW_HELP})

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DissectionError(f"batch_size must be >= 1, got {self.batch_size}")


def load_model_for(
    saes: dict[str, Any], hook: str, given: str, sae_path: Path, device: str, allow_other_model: bool
) -> tuple[Any, str, int]:
    """(model, spec, width): the model the SAEs (by where they are named, all of `hook`; the first read
    from `sae_path`) run inside, checked to have the hook, their width and to be the model they were
    trained on. The model is `given`, else the first SAE's recorded spec (never a `module:` spec read from a
    file: `vitsae.models.recorded_spec`)."""
    from vitsae.models import load_recorded, recorded_spec

    first = next(iter(saes.values()))
    spec = given or recorded_spec(first.cfg.model_spec, str(sae_path))
    model = load_recorded(first.cfg.model_spec, given, str(sae_path), device=device)
    model.check_hook_names([hook])
    width = model.token_layout(hook).width
    for where, sae in saes.items():
        check_sae_for_hook(sae, hook, width, where)
    check_sae_model({where: sae.cfg for where, sae in saes.items()}, model, spec, allow_other_model)
    return model, spec, width


def build_runs(cfg: DissectRunConfig, dcfg: DissectConfig) -> tuple[list[Run], str, dict[str, Any]]:
    """The models and bases to dissect, and the metadata describing them."""
    from vitsae.models import load
    from vitsae.sae.io import load_sae

    sae = load_sae(cfg.sae, device=cfg.device)
    hook = sae.cfg.hook_name
    if not hook:
        raise DissectionError(
            f"{cfg.sae} does not record its hook; it cannot be matched to a model's activations"
        )
    saes = {str(cfg.sae): sae}
    model, spec, width = load_model_for(saes, hook, cfg.model, cfg.sae, cfg.device, cfg.allow_other_model)
    bases = [SAEBasis(sae)]
    quantiles = {"sae": dcfg.quantile}
    if cfg.baselines:
        bases += [
            DenseBasis(width, "neurons"),
            DenseBasis(width, "rotated", random_rotation(width, dcfg.seed)),
        ]
        quantiles.update(neurons=dcfg.baseline_quantile, rotated=dcfg.baseline_quantile)
    runs = [Run(model, bases, quantiles)]
    meta: dict[str, Any] = {
        "model": spec,
        "hook": hook,
        "sae": str(cfg.sae.resolve()),
        "run": config_to_dict(cfg),
    }
    if cfg.randomized_sae is not None:
        random_sae = load_sae(cfg.randomized_sae, device=cfg.device)
        random_spec = spec if spec.startswith("random:") else f"random:{spec}"
        if random_sae.cfg.model_spec and random_sae.cfg.model_spec != random_spec:
            raise DissectionError(
                f"{cfg.randomized_sae} was trained on {random_sae.cfg.model_spec!r}; the sanity check "
                f"needs an SAE trained on {random_spec!r} "
                f"(vitsae harvest --model {random_spec}, then vitsae train)"
            )
        check_sae_for_hook(random_sae, hook, width, str(cfg.randomized_sae))
        runs.append(
            Run(
                load(random_spec, device=cfg.device),
                [SAEBasis(random_sae, "randomized")],
                {"randomized": dcfg.quantile},
            )
        )
        meta["randomized"] = {"model": random_spec, "sae": str(cfg.randomized_sae.resolve())}
    return runs, hook, meta


def stats_thresholds(stats_dir: Path, sae_path: Path, n_features: int, q: float) -> dict[str, Any]:
    from .stats import FeatureStats

    stats = FeatureStats.load(stats_dir)
    if stats.n_features != n_features:
        raise DissectionError(
            f"{stats_dir} holds statistics of {stats.n_features} features; "
            f"the SAE {sae_path} has {n_features}"
        )
    recorded = stats.meta.get("sae")
    if recorded and Path(recorded).resolve() != sae_path.resolve():
        raise DissectionError(
            f"{stats_dir} holds statistics of the SAE {recorded}, not of {sae_path.resolve()}"
        )
    return {"sae": thresholds_from_stats(stats, q)}


def print_report(result: Dissection) -> None:
    """The counts per basis, then each concept's best unit in each basis."""
    levels = [str(level) for level in result.config.iou_levels]
    names = list(result.bases)
    print(f"{result.n_images} images, {len(result.concepts)} concepts, hook {result.meta.get('hook')}")
    header = f"{'basis':<12}{'units':>7}" + "".join(f"{'c@' + lv:>9}" for lv in levels)
    header += "".join(f"{'u@' + lv:>9}" for lv in levels)
    print(header)
    for name in names:
        summary = result.summary(name)
        row = f"{name:<12}{summary['units']:>7}"
        row += "".join(f"{summary['concepts_at_iou'][lv]:>9}" for lv in levels)
        row += "".join(f"{summary['units_at_iou'][lv]:>9}" for lv in levels)
        print(row)
    print("c@x: concepts (of those present) with a unit at IoU >= x; u@x: units whose best IoU >= x\n")
    records = {name: result.concept_records(name) for name in names}
    print(f"{'concept':<24}" + "".join(f"{name:>18}" for name in names))
    for c, concept in enumerate(result.concepts):
        cells = "".join(f"{records[n][c]['unit']:>10} {records[n][c]['iou']:.3f}" + " " * 2 for n in names)
        print(f"{concept:<24}{cells}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DissectRunConfig)
    add_config_arguments(parser, DissectConfig)


def run(args: argparse.Namespace) -> int:
    from vitsae.data.concepts import open_concept_source

    cfg = config_from_args(DissectRunConfig, args)
    dcfg = config_from_args(DissectConfig, args)
    source = open_concept_source(cfg.source)
    runs, hook, meta = build_runs(cfg, dcfg)
    thresholds = None
    if cfg.stats is not None:
        thresholds = stats_thresholds(cfg.stats, cfg.sae, runs[0].bases[0].n_units, dcfg.quantile)
    meta["source"] = source.describe()
    meta["thresholds"] = "stats" if cfg.stats is not None else "first pass"
    result = dissect(
        runs,
        hook,
        source,
        dcfg,
        thresholds=thresholds,
        batch_size=cfg.batch_size,
        device=cfg.device,
        progress=cfg.progress,
        meta=meta,
    )
    result.save(cfg.out)
    print_report(result)
    print(f"-> {cfg.out / 'dissection.json'}")
    return 0
