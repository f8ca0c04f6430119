"""`vitsae train`: train one SAE or a sweep of SAEs on a harvested store or an activations file.

Rerunning the same command resumes from the newest checkpoint in --out. Under torchrun the batch is
split over the ranks (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import sys

import torch.distributed as dist

from vitsae.config import add_config_arguments, config_from_args
from vitsae.distributed import init_if_torchrun
from vitsae.train.config import TrainConfig
from vitsae.train.data import StoreBatches, TensorBatches, load_activation_file
from vitsae.train.trainer import Trainer, TrainingDiverged


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--store", help="activation store folder made by `vitsae harvest`")
    data.add_argument("--activations", help="safetensors file holding an 'activations' [N, D] tensor")
    parser.add_argument("--out", required=True, help="output folder (one subfolder per SAE, checkpoints/)")
    parser.add_argument("--hook-name", default="", help="hook name to record (with --activations)")
    add_config_arguments(parser, TrainConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(TrainConfig, args)
    started_group = init_if_torchrun()
    try:
        if args.store:
            source = StoreBatches(args.store, cfg.batch_size, seed=cfg.seed)
            fields = {"hook_name": source.hook_name, "model_spec": source.model_spec, "store": source.store}
            trainer = Trainer(cfg, source, args.out, norm_scale=source.norm_scale, sae_fields=fields)
        else:
            acts_ND = load_activation_file(args.activations)
            source = TensorBatches(acts_ND, cfg.batch_size, seed=cfg.seed)
            fields = {"hook_name": args.hook_name, "store": str(args.activations)}
            trainer = Trainer(cfg, source, args.out, sae_fields=fields)
        summaries = trainer.fit()
    except TrainingDiverged as exc:
        print(f"vitsae train: {exc}", file=sys.stderr)
        return 1
    finally:
        if started_group:
            dist.destroy_process_group()
    if trainer.rank == 0:
        print(f"{'run':<40} {'fvu':>8} {'l0':>8} {'dead':>6}")
        for name, summary in summaries.items():
            m = summary["final_metrics"]
            print(f"{name:<40} {m['fvu']:>8.4f} {m['l0']:>8.2f} {m['dead_fraction']:>6.3f}")
        print(f"saved under {args.out}")
    return 0
