"""`vitsae stats`: one streaming pass of an SAE over a store, saved for the browser and later analysis.

Beside the statistics it saves the logit effects of the SAE's decoder directions (`logit_effects.safetensors`)
when the model (the store's recorded one, or `--model`) has a linear classification head.

The pass checkpoints into `<out>/.feature_stats.partial/`; rerunning the same command after an
interruption continues from there, and the directory is removed once the statistics are saved.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from vitsae.analysis.checkpoint import CheckpointMismatch
from vitsae.analysis.compute import compute_feature_stats
from vitsae.analysis.logits import LOGIT_EFFECTS_FILE, LogitEffects, model_logit_effects
from vitsae.analysis.stats import StatsConfig
from vitsae.config import add_config_arguments, config_from_args
from vitsae.sae.io import load_sae
from vitsae.store.format import StoreError
from vitsae.store.reader import ActivationStore

PARTIAL_DIR = ".feature_stats.partial"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, required=True, help="activation store directory (one hook)")
    parser.add_argument("--sae", type=Path, required=True, help="trained SAE directory")
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for feature_stats.{safetensors,json}"
    )
    parser.add_argument("--batch-rows", type=int, default=8192, help="rows encoded per step (default: 8192)")
    parser.add_argument(
        "--merge-rows",
        type=int,
        default=65536,
        help="rows merged into the statistics per step (default: 65536)",
    )
    parser.add_argument(
        "--checkpoint-every-rows",
        type=int,
        default=1_000_000,
        help=f"save the pass's state into <out>/{PARTIAL_DIR} about every N rows, so rerunning an "
        "interrupted command continues it; 0 saves none (default: 1000000)",
    )
    parser.add_argument(
        "--restart", action="store_true", help=f"discard a partial pass in <out>/{PARTIAL_DIR} and start over"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model spec for the logit effects (default: the store's recorded one; 'none' to skip)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for the SAE (default: cpu)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    add_config_arguments(parser, StatsConfig)


def _logit_effects(model: str | None, store: ActivationStore, W_dec_FD) -> tuple[LogitEffects | None, str]:
    """The logit effects through `model`'s head (default: the store's recorded model), or None and why."""
    spec = model if model is not None else (store.manifest.get("model") or {}).get("spec")
    if spec in (None, "", "none"):
        return None, "no model spec"
    return model_logit_effects(spec, W_dec_FD, explicit=model is not None)


def run(args: argparse.Namespace) -> int:
    partial = args.out / PARTIAL_DIR
    if args.restart and partial.exists():
        shutil.rmtree(partial)

    def resumed(row: int) -> None:
        print(f"resuming the statistics pass at row {row} of {len(store)} from {partial}", flush=True)

    try:
        config = config_from_args(StatsConfig, args)
        store = ActivationStore.open(args.store)
        sae = load_sae(args.sae, device=args.device)
        effects, why_not = _logit_effects(args.model, store, sae.W_dec)
        stats = compute_feature_stats(
            store,
            sae,
            config,
            batch_rows=args.batch_rows,
            merge_rows=args.merge_rows,
            progress=args.progress,
            checkpoint_dir=partial,
            checkpoint_every_rows=args.checkpoint_every_rows,
            on_resume=resumed,
        )
    except CheckpointMismatch as err:
        print(f"vitsae stats: error: {err} (or pass --restart)", file=sys.stderr)
        return 2
    except (StoreError, ValueError, FileNotFoundError) as err:
        print(f"vitsae stats: error: {err}", file=sys.stderr)
        return 2
    stats.meta["sae"] = str(args.sae.resolve())
    stats.save(args.out)
    if effects is not None:
        effects.save(args.out)
    else:
        (args.out / LOGIT_EFFECTS_FILE).unlink(missing_ok=True)  # a stale one would describe another SAE
        print(f"vitsae stats: no logit effects: {why_not}", file=sys.stderr)
    if partial.exists():
        shutil.rmtree(partial)
    live = int((stats.fire_count_F > 0).sum())
    print(
        f"{stats.n_features} features ({live} fire, {stats.n_features - live} dead) over "
        f"{stats.n_images} images and {stats.n_tokens} tokens -> {args.out}"
    )
    return 0
