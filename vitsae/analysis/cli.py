"""`vitsae stats`: one streaming pass of an SAE over a store, saved for the browser and later analysis.

Every option is a field of `StatsConfig`. The pass checkpoints into `<out>/.feature_stats.partial/`;
rerunning the same command after an interruption continues from there, and the directory is removed once
the statistics are saved.
"""

from __future__ import annotations

import argparse
import shutil

from vitsae.analysis.checkpoint import CheckpointMismatch
from vitsae.analysis.compute import compute_feature_stats
from vitsae.analysis.stats import PARTIAL_DIR, StatsConfig
from vitsae.config import add_config_arguments, config_from_args
from vitsae.fileio import check_output_folder
from vitsae.sae.io import load_sae
from vitsae.store.reader import ActivationStore

__all__ = ["PARTIAL_DIR", "add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, StatsConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(StatsConfig, args)
    partial = check_output_folder(config.out) / PARTIAL_DIR
    if config.restart and partial.exists():
        shutil.rmtree(partial)
    store = ActivationStore.open(config.store)
    sae = load_sae(config.sae, device=config.device)

    def resumed(row: int) -> None:
        print(f"resuming the statistics pass at row {row} of {len(store)} from {partial}", flush=True)

    try:
        stats = compute_feature_stats(
            store,
            sae,
            config,
            batch_rows=config.batch_rows,
            merge_rows=config.merge_rows,
            progress=config.progress,
            checkpoint_dir=partial,
            checkpoint_every_rows=config.checkpoint_every_rows,
            on_resume=resumed,
        )
    except CheckpointMismatch as err:
        raise CheckpointMismatch(f"{err} (or pass --restart)") from err
    stats.meta["sae"] = str(config.sae.resolve())
    stats.save(config.out)
    if partial.exists():
        shutil.rmtree(partial)
    live = int((stats.fire_count_F > 0).sum())
    print(
        f"{stats.n_features} features ({live} fire, {stats.n_features - live} dead) over "
        f"{stats.n_images} images and {stats.n_tokens} tokens -> {config.out}"
    )
    return 0
