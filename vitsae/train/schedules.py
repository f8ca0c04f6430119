"""Learning-rate and penalty schedules as pure functions of the step (so resuming needs only the step)."""

from __future__ import annotations

import math

from vitsae.errors import InvalidValue


def lr_factor(step: int, total_steps: int, warmup_steps: int, decay: str, decay_start: float, floor: float):
    """Multiplier of the base learning rate at `step`: linear warm-up, flat, then decay to `floor`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    start = max(int(decay_start * total_steps), warmup_steps)
    if step < start or total_steps <= start:
        return 1.0
    progress = min((step - start) / (total_steps - start), 1.0)
    if decay == "linear":
        shape = 1.0 - progress
    elif decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise InvalidValue(f"unknown lr decay {decay!r}; valid: ['constant', 'linear', 'cosine']")
    return floor + (1.0 - floor) * shape


def penalty_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the sparsity coefficient: linear ramp from 0 over `warmup_steps`."""
    if warmup_steps <= 0:
        return 1.0
    return min((step + 1) / warmup_steps, 1.0)


# --- defaults derived from the run's size (docs/training.md, "Defaults from the run size") -------------
LR_AT_REFERENCE = 3e-3  # measured best on bench_recovery at F = 2,048, B = 4,096 (docs/training.md)
REFERENCE_WIDTH = 2048
LR_MAX = 4e-3
LR_MIN = 1e-4


def derived_lr(d_sae: int) -> float:
    """Adam's learning rate for a dictionary of `d_sae` features: 1 / sqrt(F) scaling (Gao et al. 2024,
    "Scaling and evaluating sparse autoencoders", sec. A.3) anchored at the rate measured best at F = 2,048,
    clipped to [LR_MIN, LR_MAX]."""
    lr = LR_AT_REFERENCE * math.sqrt(REFERENCE_WIDTH / d_sae)
    return min(max(lr, LR_MIN), LR_MAX)


def derived_warmup_steps(total_steps: int) -> int:
    """Learning-rate warm-up: 5% of the steps, at least 10 and at most 1,000."""
    return min(max(round(0.05 * total_steps), 10), 1000, total_steps)


def derived_dead_tokens(total_tokens: int) -> int:
    """The dead-feature window: a tenth of the run, at least 10^5 rows (so "dead" means firing on fewer
    than 1 row in 10^5) and at most 10M (the peers' window, reached by runs of 100M tokens)."""
    return min(max(total_tokens // 10, 100_000), 10_000_000)


def derived_target_warmup_steps(total_steps: int) -> int:
    """Steps over which `--target-l0`'s setpoint moves from the first L0 to the target: 80% of the run.

    ReLU learns its dictionary while its L0 is still several times the target and keeps it as the penalty
    tightens; reaching the target within a quarter of the run left 87% of the features duplicated and
    true->learned MMCS at 0.51 on bench_recovery's x8-l8 (docs/training.md)."""
    return max(total_steps * 4 // 5, 1)
