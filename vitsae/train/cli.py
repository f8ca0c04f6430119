"""`vitsae train`: train one SAE or a sweep of SAEs on a harvested store or an activations file.

Every option is a field of `TrainConfig`. Rerunning the same command resumes from the newest checkpoint in
--out. Under torchrun the batch is split over the ranks (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse

import torch.distributed as dist

from vitsae.config import add_config_arguments, config_from_args
from vitsae.distributed import init_if_torchrun
from vitsae.errors import InvalidValue
from vitsae.fileio import check_output_folder
from vitsae.train.config import TrainConfig
from vitsae.train.data import StoreBatches, TensorBatches, load_activation_file
from vitsae.train.trainer import Trainer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, TrainConfig)


def _trainer(cfg: TrainConfig) -> Trainer:
    """The trainer for the store or activations file `cfg` names, with the dictionary size checked."""
    if cfg.store is not None:
        source = StoreBatches.from_config(cfg)
        fields = {"hook_name": source.hook_name, "model_spec": source.model_spec, "store": source.store}
        norm_scale, d_in = source.norm_scale, source.d_in
    elif cfg.activations is not None:
        acts_ND = load_activation_file(cfg.activations)
        source = TensorBatches(acts_ND, cfg.batch_size, seed=cfg.seed)
        fields = {"hook_name": cfg.hook_name, "store": str(cfg.activations)}
        norm_scale, d_in = None, source.d_in
    else:
        raise InvalidValue("give the training data: --store DIR or --activations FILE")
    if cfg.architecture in ("topk", "batchtopk"):
        smallest = min(cfg.expansion_factor) * d_in
        if max(cfg.k) > smallest:
            raise InvalidValue(
                f"--k {max(cfg.k)} is above the dictionary size {smallest} (expansion factor "
                f"{min(cfg.expansion_factor)} x width {d_in}); use a smaller --k or a larger "
                "--expansion-factor"
            )
    return Trainer(cfg, source, cfg.out, norm_scale=norm_scale, sae_fields=fields)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(TrainConfig, args)
    check_output_folder(cfg.out)
    started_group = init_if_torchrun()
    try:
        trainer = _trainer(cfg)
        summaries = trainer.fit()
    finally:
        if started_group:
            dist.destroy_process_group()
    if trainer.rank == 0:
        print(f"{'run':<40} {'fvu':>8} {'l0':>8} {'dead':>6}")
        for name, summary in summaries.items():
            m = summary["final_metrics"]
            print(f"{name:<40} {m['fvu']:>8.4f} {m['l0']:>8.2f} {m['dead_fraction']:>6.3f}")
        print(f"saved under {cfg.out}")
    return 0
