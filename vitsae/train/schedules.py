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
