"""`vitsae stats`: one streaming pass of an SAE over a store, saved for the browser and later analysis.

The pass checkpoints into `<out>/.feature_stats.partial/`; rerunning the same command after an
interruption continues from there, and the directory is removed once the statistics are saved.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from vitsae.config import add_config_arguments, config_from_args
from vitsae.sae.io import load_sae
from vitsae.store.format import StoreError
from vitsae.store.reader import ActivationStore

from .checkpoint import CheckpointMismatch
from .compute import compute_feature_stats
from .stats import StatsConfig

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
    parser.add_argument("--device", default="cpu", help="torch device for the SAE (default: cpu)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    add_config_arguments(parser, StatsConfig)


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
    if partial.exists():
        shutil.rmtree(partial)
    live = int((stats.fire_count_F > 0).sum())
    print(
        f"{stats.n_features} features ({live} fire, {stats.n_features - live} dead) over "
        f"{stats.n_images} images and {stats.n_tokens} tokens -> {args.out}"
    )
    return 0
