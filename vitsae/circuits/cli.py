"""`vitsae trace`: the circuit of a class logit or an SAE feature over SAEs at several hooks.

Writes `<out>/graph.json`, `graph.safetensors`, `features.json`, `graph.html`, `graph.png` and
`faithfulness.png` (docs/circuits.md).
Nothing is written into the model's, the SAEs' or the statistics' folders.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from vitsae.analysis.stats import FeatureStats
from vitsae.circuits.columns import make_columns
from vitsae.circuits.config import TraceConfig
from vitsae.circuits.files import write_feature_links, write_graph
from vitsae.circuits.graph import build_graph
from vitsae.circuits.page import write_page
from vitsae.circuits.picture import faithfulness_figure, graph_figure
from vitsae.circuits.target import CircuitError, Target
from vitsae.config import add_config_arguments, config_from_args, config_to_dict
from vitsae.data.open import open_source
from vitsae.edit.cli import add_repeatable, check_out, model_folder, provenance
from vitsae.edit.inputs import class_names, image_batches, load_sites, output_width, resolve_class
from vitsae.models import load
from vitsae.sae.provenance import check_sae_model

REPEATED = ("sae", "stats", "browser")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, TraceConfig, skip=REPEATED)
    for name in REPEATED:
        add_repeatable(parser, TraceConfig, name, required=name == "sae")


def parse_target(text: str) -> tuple[str, str, int | None]:
    """`class:NAME` -> ("class", NAME, None); `feature:RUN_DIR:F` -> ("feature", RUN_DIR, F)."""
    kind, _, rest = text.partition(":")
    if kind == "class" and rest:
        return "class", rest, None
    if kind == "feature":
        folder, _, feature = rest.rpartition(":")
        if folder and feature.strip().lstrip("-").isdigit():
            return "feature", folder, int(feature)
    raise CircuitError(f"--target {text!r}: expected class:NAME (or class:INDEX) or feature:RUN_DIR:F")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(TraceConfig, args)
    kind, name, feature = parse_target(cfg.target)
    sae_dirs = list(cfg.sae)
    if kind == "feature" and not any(Path(d).resolve() == Path(name).resolve() for d in sae_dirs):
        sae_dirs.append(name)
    check_out(cfg.out, [model_folder(cfg.model), *sae_dirs, *cfg.stats])
    model = load(cfg.model, device=cfg.device)
    source = open_source(cfg.source)
    sites = load_sites(tuple(sae_dirs), cfg.device)
    saes = {str(folder): site.sae.cfg for folder, site in zip(sae_dirs, sites, strict=True)}
    check_sae_model(saes, model, cfg.model, cfg.allow_other_model)
    columns = make_columns(model, sites, sae_dirs)
    names = class_names(source, output_width(model, model.preprocess))
    if kind == "class":
        index = resolve_class(name, names)
        target = Target("class", index, label=names[index])
    else:
        column = next(c for c in columns if Path(c.path).resolve() == Path(name).resolve())
        if not 0 <= feature < column.n_features:
            raise CircuitError(
                f"--target feature {feature} out of range: the SAE {name} at {column.hook} has "
                f"{column.n_features} features"
            )
        if column is not columns[-1]:
            raise CircuitError(
                f"--target feature of the SAE at {column.hook}, but --sae {columns[-1].path} "
                f"({columns[-1].hook}) runs after it: a feature target must be the last SAE"
            )
        target = Target("feature", feature, column.hook, label=f"{column.hook} #{feature}")
    if len([c for c in columns if target.kind == "class" or c.hook != target.hook]) < 1:
        raise CircuitError("no SAE upstream of the target: give an --sae before the target feature's")
    only = resolve_class(cfg.only_class, names) if cfg.only_class else None
    batches = image_batches(source, model.preprocess, cfg.images, cfg.batch_size, only)
    mean_active = _mean_active(cfg, columns)
    total = min(cfg.images, len(source)) if only is None else None
    record, tensors = build_graph(model, columns, target, batches, cfg, mean_active, total)
    record = {
        "config": config_to_dict(cfg),
        "provenance": provenance(cfg.model, sae_dirs, model, sites, source),
        "class_names": names,
        **record,
    }
    write_graph(cfg.out, record, tensors)
    write_feature_links(cfg.out, record)
    links = _browser_links(cfg, sae_dirs, columns)
    write_page(cfg.out / "graph.html", record, links)
    graph_figure(record, cfg.out / "graph.png")
    if "faithfulness" in record:
        faithfulness_figure(record, cfg.out / "faithfulness.png")
    _print_summary(record)
    print(
        f"-> {cfg.out / 'graph.json'}, graph.safetensors, features.json, graph.html, graph.png"
        + (", faithfulness.png" if "faithfulness" in record else "")
    )
    return 0


def _mean_active(cfg: TraceConfig, columns) -> dict[str, torch.Tensor] | None:
    """E[a_i | a_i > 0] per SAE hook from the --stats folders (None without them)."""
    if not cfg.stats:
        return None
    out = {}
    for column, folder in zip(columns, cfg.stats, strict=False):
        stats = FeatureStats.load(folder)
        if stats.n_features != column.n_features:
            raise CircuitError(
                f"--stats {folder} has {stats.n_features} features but --sae {column.path} has "
                f"{column.n_features}"
            )
        out[column.hook] = stats.mean_active_F().double()
    return out


def _browser_links(cfg: TraceConfig, sae_dirs: list[str], columns) -> dict[str, str]:
    """Per SAE hook: the browser folder, relative to the output folder (file:// links), when given."""
    links = {}
    for column, folder in zip(columns, cfg.browser, strict=False):
        if folder and folder != "-":
            links[column.hook] = os.path.relpath(Path(folder).resolve(), cfg.out.resolve())
    return links


def _print_summary(record: dict) -> None:
    target = record["target"]
    print(
        f"target {target['label'] or target['id']}: mean {target['mean']:.4f} "
        f"over {record['n_images']} images"
    )
    print(f"{'source':<34} {'target':<34} {'attribution':>11} {'weight':>9} {'ablation':>9}")
    for edge in sorted(record["edges"], key=lambda e: -abs(e["attribution"]))[:15]:
        weight = "-" if edge["weight"] is None else f"{edge['weight']:.3f}"
        ablation = "-" if edge["ablation"] is None else f"{edge['ablation']:+.4f}"
        print(
            f"{edge['source']:<34} {edge['target']:<34} {edge['attribution']:>11.4f} "
            f"{weight:>9} {ablation:>9}"
        )
    for name, agreement in record.get("agreement", {}).items():
        if agreement["spearman"] is not None:
            print(
                f"attribution vs ablation, {agreement['n_edges']} edges {name.replace('_', ' ')}: Spearman "
                f"{agreement['spearman']:.3f}, signs agree {agreement['sign_agreement']:.0%}"
            )
    faith = record.get("faithfulness")
    if faith:
        for name in ("errors_kept", "errors_ablated"):
            row = faith[name]
            print(f"faithfulness ({name.replace('_', ' ')}): n for 80% {row['n_80']}, for 90% {row['n_90']}")
