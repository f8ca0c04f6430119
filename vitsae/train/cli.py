"""`vitsae train`: train one SAE or a sweep of SAEs on a harvested store or an activations file.

Every option is a field of `TrainConfig`. Rerunning the same command resumes from the newest checkpoint in
--out; on a finished run it prints the recorded summary and changes nothing; with a larger --total-tokens it
trains on from the finished run's last checkpoint. Under torchrun the batch is split over the ranks (gloo on
CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse

import torch.distributed as dist

from vitsae.config import add_config_arguments, config_from_args
from vitsae.distributed import init_if_torchrun
from vitsae.errors import InvalidValue
from vitsae.fileio import check_output_folder
from vitsae.train import checkpoint as ckpt
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
        fields["model_weights_hash"] = str(source.reader.manifest.get("model", {}).get("weights_hash", ""))
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


def _print_summary(summaries: dict, out: object) -> None:
    print(f"{'run':<40} {'fvu':>8} {'l0':>8} {'dead':>6}")
    for name, summary in summaries.items():
        m = summary.get("final_metrics", {})
        cells = [
            f"{m[key]:>{width}.{digits}f}" if key in m else f"{'-':>{width}}"
            for key, width, digits in (("fvu", 8, 4), ("l0", 8, 2), ("dead_fraction", 6, 3))
        ]
        print(f"{name:<40} {' '.join(cells)}")
    print(f"saved under {out}")


def _announce_rerun(cfg: TrainConfig) -> None:
    """Say how a rerun on a folder with checkpoints goes on (resuming, or training a finished run longer)."""
    latest = ckpt.latest_checkpoint(cfg.out)
    if latest is None:
        return
    state = ckpt.read_trainer_state(latest)
    if state["config"].get("total_tokens") != cfg.total_tokens and state["step"] <= cfg.total_steps:
        print(
            f"continuing {cfg.out} from its checkpoint at step {state['step']} ({state['tokens']} tokens) to "
            f"step {cfg.total_steps} ({cfg.total_tokens} tokens requested, "
            f"{state['config'].get('total_tokens')} before)",
            flush=True,
        )
    elif state["step"] < cfg.total_steps:
        print(f"resuming {cfg.out} from step {state['step']} of {cfg.total_steps}", flush=True)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(TrainConfig, args)
    check_output_folder(cfg.out)
    finished = ckpt.finished_summaries(cfg.out, cfg)
    if finished is not None:
        print(f"{cfg.out} holds this run, finished; nothing to do (the recorded summary follows)")
        _print_summary(finished, cfg.out)
        return 0
    started_group = init_if_torchrun()
    try:
        trainer = _trainer(cfg)
        if trainer.rank == 0:
            _announce_rerun(cfg)
        summaries = trainer.fit()
    finally:
        if started_group:
            dist.destroy_process_group()
    if trainer.rank == 0:
        _print_summary(summaries, cfg.out)
    return 0
