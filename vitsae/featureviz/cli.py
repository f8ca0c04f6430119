"""`vitsae visualize`: the options of VisualizeConfig as command-line flags."""

from __future__ import annotations

import argparse

from vitsae.config import add_config_arguments, config_from_args
from vitsae.featureviz.config import VisualizeConfig
from vitsae.featureviz.run import visualize_targets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, VisualizeConfig)


def run(args: argparse.Namespace) -> int:
    from vitsae.models import load
    from vitsae.sae import load_sae
    from vitsae.sae.provenance import check_sae_model

    cfg = config_from_args(VisualizeConfig, args)
    model = load(cfg.model, device=cfg.device).eval()
    sae = None if cfg.sae is None else load_sae(cfg.sae, device=cfg.device)
    if sae is not None:
        check_sae_model({str(cfg.sae): sae.cfg}, model, cfg.model, cfg.allow_other_model)
    record = visualize_targets(cfg, model, sae)
    for target in record["targets"]:
        ratio = target.get("ratio")
        reached = ", ".join(f"{v:.3g}" for v in target["objective"])
        extra = (
            ""
            if not ratio
            else "  ratio to dataset max " + ", ".join("-" if r is None else f"{r:.2f}" for r in ratio)
        )
        print(f"{target['name']:>12}: {reached}{extra}")
    print(f"-> {cfg.out}")
    return 0
