"""Training options, and their expansion into one run per point of a hyperparameter sweep."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

from vitsae.sae.config import Architecture, Backend, SAEConfig


@dataclass(frozen=True)
class TrainConfig:
    """How to train one SAE, or a sweep of SAEs that share every batch (the tuple-valued fields)."""

    architecture: Architecture = field(default="relu", metadata={"help": "relu, topk, batchtopk or jumprelu"})
    expansion_factor: tuple[int, ...] = field(default=(8,), metadata={"help": "F / D; several = a sweep"})
    k: tuple[int, ...] = field(default=(32,), metadata={"help": "TopK/BatchTopK k; several = a sweep"})
    l1_coefficient: tuple[float, ...] = field(
        default=(5.0,), metadata={"help": "L1 (relu) or L0 (jumprelu) penalty coefficient; several = a sweep"}
    )
    lr: tuple[float, ...] = field(default=(4e-4,), metadata={"help": "Adam learning rate; several = a sweep"})
    batch_size: int = field(default=4096, metadata={"help": "activation rows per step (all ranks together)"})
    total_tokens: int = field(default=1 << 22, metadata={"help": "activation rows to train on"})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2"})
    lr_warmup_steps: int = field(default=100, metadata={"help": "linear learning-rate warm-up steps"})
    lr_decay: Literal["constant", "linear", "cosine"] = field(
        default="linear", metadata={"help": "learning-rate decay shape after lr_decay_start"}
    )
    lr_decay_start: float = field(default=0.8, metadata={"help": "fraction of training where decay begins"})
    lr_min_ratio: float = field(default=0.0, metadata={"help": "final learning rate as a fraction of lr"})
    l1_warmup_steps: int = field(default=0, metadata={"help": "steps over which the penalty ramps up from 0"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm per SAE (0: no clipping)"})
    normalize: Literal["mean_norm", "none"] = field(
        default="mean_norm",
        metadata={"help": "mean_norm: scale activations so E||x|| = sqrt(D) (from the store if it has it)"},
    )
    norm_batches: int = field(default=8, metadata={"help": "batches used to estimate the normalisation"})
    dead_handling: Literal["none", "resample", "auxk"] = field(
        default="auxk", metadata={"help": "revive dead features by resampling or an auxiliary loss"}
    )
    dead_tokens: int = field(default=1 << 21, metadata={"help": "tokens unfired before a feature is dead"})
    resample_every: int = field(default=2000, metadata={"help": "steps between resamplings"})
    resample_until: float = field(default=0.5, metadata={"help": "fraction of training with resampling"})
    auxk_k: int = field(default=0, metadata={"help": "AuxK features (0: D / 2)"})
    auxk_coefficient: float = field(default=1 / 32, metadata={"help": "AuxK loss coefficient"})
    dense_frequency: float = field(default=0.1, metadata={"help": "firing rate of a dense feature"})
    decoder_init_norm: float | None = field(default=None, metadata={"help": "see SAEConfig"})
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = field(
        default="geometric_median", metadata={"help": "b_dec from the first batch"}
    )
    jumprelu_bandwidth: float = field(default=0.05, metadata={"help": "JumpReLU STE bandwidth"})
    jumprelu_init_threshold: float = field(default=0.1, metadata={"help": "initial JumpReLU threshold"})
    backend: Backend = field(default="auto", metadata={"help": "dense, sparse or auto (see vitsae.sae)"})
    log_every: int = field(default=50, metadata={"help": "steps between metric records"})
    checkpoint_every: int = field(default=500, metadata={"help": "steps between checkpoints"})
    keep_checkpoints: int = field(default=2, metadata={"help": "how many recent checkpoints to keep"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and data order"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    plot: bool = field(default=True, metadata={"help": "draw each run's curves to curves.png at the end"})

    def __post_init__(self) -> None:
        for name in ("expansion_factor", "k", "l1_coefficient", "lr"):
            if not getattr(self, name):
                raise ValueError(f"{name} needs at least one value")
        if self.batch_size <= 0 or self.total_tokens < self.batch_size:
            raise ValueError(f"need 0 < batch_size ({self.batch_size}) <= total_tokens ({self.total_tokens})")
        if self.log_every <= 0 or self.checkpoint_every <= 0:
            raise ValueError("log_every and checkpoint_every must be positive")

    @property
    def total_steps(self) -> int:
        return self.total_tokens // self.batch_size


@dataclass(frozen=True)
class RunSpec:
    """One SAE of a sweep: its name (= output subdirectory) and its own hyperparameters."""

    name: str
    sae: SAEConfig
    lr: float
    l1_coefficient: float


def _fmt(value: float) -> str:
    return f"{value:g}"


def expand_sweep(cfg: TrainConfig, d_in: int, **sae_fields) -> list[RunSpec]:
    """One `RunSpec` per combination of the swept values that the architecture uses.

    `sae_fields` (hook_name, model_spec, store, norm_scale) are copied into every SAE's config.
    """
    uses_k = cfg.architecture in ("topk", "batchtopk")
    uses_l1 = cfg.architecture in ("relu", "jumprelu")
    ks = cfg.k if uses_k else cfg.k[:1]
    l1s = cfg.l1_coefficient if uses_l1 else cfg.l1_coefficient[:1]
    runs = []
    for ef, k, l1, lr in itertools.product(cfg.expansion_factor, ks, l1s, cfg.lr):
        parts = [cfg.architecture, f"x{ef}"]
        parts += [f"k{k}"] if uses_k else []
        parts += [f"l1_{_fmt(l1)}"] if uses_l1 else []
        parts.append(f"lr{_fmt(lr)}")
        sae_cfg = SAEConfig(
            d_in=d_in,
            expansion_factor=ef,
            architecture=cfg.architecture,
            k=k,
            jumprelu_bandwidth=cfg.jumprelu_bandwidth,
            jumprelu_init_threshold=cfg.jumprelu_init_threshold,
            decoder_init_norm=cfg.decoder_init_norm,
            b_dec_init=cfg.b_dec_init,
            backend=cfg.backend,
            **sae_fields,
        )
        runs.append(RunSpec("_".join(parts), sae_cfg, lr, l1))
    return runs
