"""Training options, and their expansion into one run per point of a hyperparameter sweep.

The SAE options a training run shares with `SAEConfig` are declared once, there: `sae_field` copies their
default and help (as a tuple for the swept `expansion_factor` and `k`), so `vitsae train` and the saved JSON
keep their flat names while `SAEConfig` stays the one source of truth.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vitsae.config import check_choices
from vitsae.errors import InvalidValue
from vitsae.sae.config import Architecture, Backend, BDecInit, SAEConfig
from vitsae.train.schedules import (
    derived_dead_tokens,
    derived_lr,
    derived_target_warmup_steps,
    derived_warmup_steps,
)

# SAEConfig fields that TrainConfig carries as one value for every SAE of a sweep (`expand_sweep` copies
# them into each run's SAEConfig; `expansion_factor` and `k` are swept).
SAE_FIELDS = (
    "architecture",
    "jumprelu_bandwidth",
    "jumprelu_init_threshold",
    "decoder_init_norm",
    "b_dec_init",
    "backend",
)


def sae_field(name: str, sweep: bool = False) -> Any:
    """A TrainConfig field copied from `SAEConfig.<name>` (default and help); `sweep`: a tuple of values."""
    source = next(f for f in dataclasses.fields(SAEConfig) if f.name == name)
    help_text = source.metadata.get("help", "")
    if sweep:
        return field(default=(source.default,), metadata={"help": f"{help_text}; several = a sweep"})
    return field(default=source.default, metadata={"help": help_text})


@dataclass(frozen=True)
class TrainConfig:
    """How to train one SAE, or a sweep of SAEs that share every batch (the tuple-valued fields).

    The inputs (`store` or `activations`, `out`, `hook_name`) and how to run (`device`, `progress`, `plot`)
    are run-only: a rerun may change them and still resume. Python callers pass the data and the output
    folder to `Trainer` directly and may leave the inputs unset.
    """

    store: Path | None = field(
        default=None,
        metadata={"help": "activation store folder made by `vitsae harvest`", "run_only": True},
    )
    activations: Path | None = field(
        default=None,
        metadata={"help": "safetensors file holding an 'activations' [N, D] tensor", "run_only": True},
    )
    out: Path | None = field(
        default=None,
        metadata={
            "help": "output folder (one subfolder per SAE, checkpoints/)",
            "run_only": True,
            "required": True,
        },
    )
    hook_name: str = field(
        default="", metadata={"help": "hook name to record (with --activations)", "run_only": True}
    )
    architecture: Architecture = sae_field("architecture")
    expansion_factor: tuple[int, ...] = sae_field("expansion_factor", sweep=True)
    k: tuple[int, ...] = sae_field("k", sweep=True)
    l1_coefficient: tuple[float, ...] = field(
        default=(5.0,),
        metadata={
            "help": "L1 (relu) or L0 (jumprelu) penalty coefficient; several = a sweep "
            "(with --target-l0: the controller's starting value)"
        },
    )
    target_l0: tuple[float, ...] = field(
        default=(),
        metadata={
            "help": "relu, jumprelu: adapt the penalty coefficient until the training L0 is this "
            "(docs/training.md); several = a sweep"
        },
    )
    lr: tuple[float, ...] = field(
        default=(),
        metadata={"help": "Adam learning rate (default: derived from the run size); several = a sweep"},
    )
    batch_size: int = field(default=4096, metadata={"help": "activation rows per step (all ranks together)"})
    total_tokens: int = field(default=1 << 22, metadata={"help": "activation rows to train on"})
    hold: Literal["disk", "ram", "device"] = field(
        default="disk",
        metadata={
            "help": "where a store is served from: disk (windows read ahead while one is served), ram (the "
            "whole store loaded once) or device (loaded into GPU memory); the memory it uses is printed. "
            "The batches are the same",
            "run_only": True,
        },
    )
    read_chunk_mib: int = field(
        default=4, metadata={"help": "MiB of consecutive store rows read at once; chunks are shuffled"}
    )
    shuffle_window_mib: int = field(
        default=512,
        metadata={"help": "MiB of store rows shuffled together (reading from disk holds two windows in RAM)"},
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2"})
    lr_warmup_steps: int | None = field(
        default=None, metadata={"help": "linear learning-rate warm-up steps (default: from the run size)"}
    )
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
    dead_tokens: int | None = field(
        default=None,
        metadata={"help": "tokens unfired before a feature is dead (default: from the run size)"},
    )
    resample_every: int = field(default=2000, metadata={"help": "steps between resamplings"})
    resample_until: float = field(default=0.5, metadata={"help": "fraction of training with resampling"})
    copies_every: int = field(
        default=25,
        metadata={
            "help": "relu: every N steps re-initialise the features whose decoder row has cosine > 0.9 "
            "with a lower-numbered feature's, as resampling does (0: never; docs/training.md)"
        },
    )
    copies_until: float = field(
        default=0.8, metadata={"help": "relu: fraction of training in which copies are re-initialised"}
    )
    anchor_every: int = field(
        default=25,
        metadata={
            "help": "jumprelu with --target-l0: every N steps scale all thresholds by one factor so the "
            "batch's L0 is the setpoint (0: never; docs/training.md)"
        },
    )
    auxk_k: int = field(default=0, metadata={"help": "AuxK features (0: D / 2)"})
    auxk_coefficient: float = field(default=1 / 32, metadata={"help": "AuxK loss coefficient"})
    dense_frequency: float = field(default=0.1, metadata={"help": "firing rate of a dense feature"})
    dictionary_init: Literal["random", "data"] = field(
        default="random",
        metadata={
            "help": "decoder rows: random directions, or directions of training rows (docs/training.md)"
        },
    )
    refit_fraction: float = field(
        default=0.0,
        metadata={
            "help": "relu: final fraction of steps that refits the decoder with the support fixed "
            "(encoder frozen, no penalty)"
        },
    )
    unshrink: bool = field(
        default=True,
        metadata={
            "help": "relu: save the SAE as a JumpReLU with the same support and codes raised by a fitted "
            "share of the bias, undoing the L1 shrinkage (docs/training.md)"
        },
    )
    decoder_init_norm: float | None = sae_field("decoder_init_norm")
    b_dec_init: BDecInit = sae_field("b_dec_init")
    jumprelu_bandwidth: float = sae_field("jumprelu_bandwidth")
    jumprelu_init_threshold: float = sae_field("jumprelu_init_threshold")
    backend: Backend = sae_field("backend")
    log_every: int = field(default=50, metadata={"help": "steps between metric records"})
    checkpoint_every: int = field(default=500, metadata={"help": "steps between checkpoints"})
    keep_checkpoints: int = field(default=2, metadata={"help": "how many recent checkpoints to keep"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and data order"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar", "run_only": True})
    plot: bool = field(
        default=True, metadata={"help": "draw each run's curves to curves.png at the end", "run_only": True}
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if self.store is not None and self.activations is not None:
            raise InvalidValue("give either store or activations, not both")
        for name in ("expansion_factor", "k", "l1_coefficient"):
            if not getattr(self, name):
                raise InvalidValue(f"{name} needs at least one value")
        _check_all(self, "expansion_factor", lambda v: v >= 1, ">= 1")
        _check_all(self, "k", lambda v: v >= 1, ">= 1")
        _check_all(self, "lr", lambda v: v > 0, "> 0")
        _check_all(self, "l1_coefficient", lambda v: v >= 0, ">= 0")
        _check_all(self, "target_l0", lambda v: v > 0, "> 0")
        if self.target_l0 and self.architecture not in ("relu", "jumprelu"):
            raise InvalidValue(
                f"target_l0 (--target-l0) steers a penalty, which {self.architecture} has none of; "
                "use --k for topk and batchtopk"
            )
        if self.target_l0 and min(self.l1_coefficient) <= 0:
            raise InvalidValue("with --target-l0 the starting --l1-coefficient must be > 0")
        if self.batch_size <= 0 or self.total_tokens < self.batch_size:
            raise InvalidValue(
                f"need 0 < batch_size ({self.batch_size}) <= total_tokens ({self.total_tokens})"
            )
        for name in ("read_chunk_mib", "shuffle_window_mib"):
            _check_all(self, name, lambda v: v >= 1, ">= 1")
        for name in ("log_every", "checkpoint_every", "keep_checkpoints", "norm_batches", "dead_tokens"):
            _check_all(self, name, lambda v: v >= 1, ">= 1")
        _check_all(self, "resample_every", lambda v: v >= 1, ">= 1")
        _check_all(self, "copies_every", lambda v: v >= 0, ">= 0")
        _check_all(self, "anchor_every", lambda v: v >= 0, ">= 0")
        for name in ("lr_warmup_steps", "l1_warmup_steps", "auxk_k", "auxk_coefficient", "grad_clip"):
            _check_all(self, name, lambda v: v >= 0, ">= 0")
        for name in ("adam_beta1", "adam_beta2"):
            _check_all(self, name, lambda v: 0 <= v < 1, "in [0, 1)")
        for name in ("lr_decay_start", "lr_min_ratio", "resample_until", "copies_until", "refit_fraction"):
            _check_all(self, name, lambda v: 0 <= v <= 1, "in [0, 1]")
        _check_all(self, "dense_frequency", lambda v: 0 < v <= 1, "in (0, 1]")
        _check_all(self, "jumprelu_bandwidth", lambda v: v > 0, "> 0")
        _check_all(self, "decoder_init_norm", lambda v: v > 0, "> 0")

    @property
    def total_steps(self) -> int:
        return self.total_tokens // self.batch_size

    @property
    def resolved_lr_warmup_steps(self) -> int:
        """`lr_warmup_steps`, or the warm-up derived from the number of steps."""
        if self.lr_warmup_steps is not None:
            return self.lr_warmup_steps
        return derived_warmup_steps(self.total_steps)

    @property
    def resolved_dead_tokens(self) -> int:
        """`dead_tokens`, or the dead-feature window derived from the token budget."""
        if self.dead_tokens is not None:
            return self.dead_tokens
        return derived_dead_tokens(self.total_tokens)

    @property
    def target_warmup_steps(self) -> int:
        """Steps over which the `target_l0` controller's setpoint reaches the target."""
        return derived_target_warmup_steps(self.total_steps)


def _check_all(cfg: TrainConfig, name: str, ok: Any, wanted: str) -> None:
    """Refuse a field (or any value of a swept field) for which `ok` is false, naming the field's flag;
    None (a value derived later, from the run) passes."""
    value = getattr(cfg, name)
    for v in value if isinstance(value, tuple) else (value,):
        if v is not None and not ok(v):
            flag = "--" + name.replace("_", "-")
            raise InvalidValue(f"{name} ({flag}) must be {wanted}, got {v}")


@dataclass(frozen=True)
class RunSpec:
    """One SAE of a sweep: its name (= output subdirectory) and its own hyperparameters."""

    name: str
    sae: SAEConfig
    lr: float
    l1_coefficient: float
    target_l0: float | None = None


def _fmt(value: float) -> str:
    return f"{value:g}"


def expand_sweep(cfg: TrainConfig, d_in: int, **sae_fields) -> list[RunSpec]:
    """One `RunSpec` per combination of the swept values that the architecture uses.

    An empty `lr` is the rate derived from each SAE's width; with `target_l0` the penalty is steered
    (swept over the targets, starting from the first `l1_coefficient`). `sae_fields` (hook_name,
    model_spec, store, norm_scale) are copied into every SAE's config.
    """
    uses_k = cfg.architecture in ("topk", "batchtopk")
    uses_l1 = cfg.architecture in ("relu", "jumprelu")
    ks = cfg.k if uses_k else cfg.k[:1]
    l1s = cfg.l1_coefficient if uses_l1 and not cfg.target_l0 else cfg.l1_coefficient[:1]
    targets: tuple[float | None, ...] = cfg.target_l0 or (None,)
    runs = []
    for ef, k, l1, target in itertools.product(cfg.expansion_factor, ks, l1s, targets):
        for lr in cfg.lr or (derived_lr(ef * d_in),):
            parts = [cfg.architecture, f"x{ef}"]
            parts += [f"k{k}"] if uses_k else []
            parts += [f"l1_{_fmt(l1)}"] if uses_l1 and target is None else []
            parts += [f"l0_{_fmt(target)}"] if target is not None else []
            parts.append(f"lr{_fmt(lr)}")
            shared = {name: getattr(cfg, name) for name in SAE_FIELDS}
            sae_cfg = SAEConfig(d_in=d_in, expansion_factor=ef, k=k, **shared, **sae_fields)
            runs.append(RunSpec("_".join(parts), sae_cfg, lr, l1, target))
    return runs
