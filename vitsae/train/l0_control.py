"""`--target-l0`: a controller that adapts the sparsity coefficient until the measured L0 is the target.

An L1 coefficient's meaning depends on the data's scale, the dictionary width and the training stage, so a
user who wants L0 = 16 otherwise has to sweep. The controller instead treats the coefficient as a control
input and the batch's L0 (rows-weighted over every rank, measured each step) as the output:

- Setpoint schedule (the warm-up): the target starts at the L0 of the first step (ReLU starts near F / 2)
  and moves geometrically to `target` over `warmup_steps`, so the penalty rises gradually instead of
  killing features in the first steps; afterwards it stays at `target`.
- Control law (PI in log space): e = log(L0) - log(setpoint), clipped to [-1, 1];
  log c = log c0 + kp * e + I, with I += ki * e each step. L0 responds to the coefficient through the
  optimiser (an integrating plant: the encoder biases keep moving while the coefficient is off), so the
  proportional term damps the integral's overshoot.
- Anti-windup: log c stays within `LOG_RANGE` of log c0 (the integral is held at the bound). With Adam the
  speed at which L0 can move is bounded by the learning rate whatever the coefficient (its steps are
  normalised), so without the bound a lagging L0 would wind the coefficient up by orders of magnitude and
  the penalty would swamp the reconstruction gradient (after clipping) once L0 arrives.

The state (integral, current log-coefficient, first L0) is three floats, saved in every checkpoint, and
each update is plain Python float arithmetic on the all-reduced L0, so a resumed run follows the same
trajectory bit for bit. See docs/training.md.

JumpReLU needs more: below its target the penalty has no authority (it can only raise thresholds; what
lowers them is the reconstruction's straight-through gradient, which the coefficient does not steer), so
`anchor_thresholds` moves every threshold by one common factor to put a batch's L0 at the setpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from vitsae.sae.model import SparseAutoencoder

KP = 0.5
KI = 0.05
LOG_RANGE = 5.0  # the coefficient stays within exp(+-5) ~ 150x of its start


@dataclass
class L0Controller:
    """The coefficient for the next step (`coefficient`), updated by `update(step, l0)` after each step."""

    target: float
    start_coefficient: float
    warmup_steps: int
    integral: float = 0.0
    log_coefficient: float | None = None
    start_l0: float | None = None

    @property
    def coefficient(self) -> float:
        if self.log_coefficient is None:
            return self.start_coefficient
        return math.exp(self.log_coefficient)

    def setpoint(self, step: int) -> float:
        """The L0 the controller aims at after `step` (geometric warm-up from the first L0)."""
        if self.start_l0 is None or self.warmup_steps <= 0 or step >= self.warmup_steps:
            return self.target
        start = max(self.start_l0, self.target)
        progress = (step + 1) / self.warmup_steps
        return math.exp(math.log(start) + progress * (math.log(self.target) - math.log(start)))

    def update(self, step: int, l0: float) -> None:
        """Take the L0 measured at `step` (with the current coefficient) into account."""
        if self.start_l0 is None:
            self.start_l0 = l0
        error = math.log(max(l0, 1e-3)) - math.log(self.setpoint(step))
        error = min(max(error, -1.0), 1.0)
        start = math.log(self.start_coefficient)
        self.integral = min(max(self.integral + KI * error, -LOG_RANGE), LOG_RANGE)
        self.log_coefficient = min(
            max(start + KP * error + self.integral, start - LOG_RANGE), start + LOG_RANGE
        )

    def state(self) -> dict[str, float | int | None]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> L0Controller:
        return cls(**state)


@torch.no_grad()
def anchor_thresholds(sae: SparseAutoencoder, x_BD: torch.Tensor, l0: float) -> float:
    """Multiply every JumpReLU threshold by one factor so that `x_BD` (normalised rows) has mean L0 `l0`
    (or every positive pre-activation fires, if fewer); returns the log of the factor. Each feature keeps
    its threshold relative to the others: the factor is the geometric mean of the n-th and (n+1)-th largest
    ratio pre-activation / threshold, n = l0 * rows."""
    ratios = (sae.pre_activations(x_BD, normalized=True) / sae.jumprelu_threshold).flatten()
    positive = ratios[ratios > 0]
    if positive.numel() == 0:
        return 0.0
    n = min(max(round(l0 * x_BD.shape[0]), 1), positive.numel())
    top = positive.topk(min(n + 1, positive.numel())).values.double()
    nth = float(top[n - 1])
    after = float(top[n]) if n < positive.numel() else nth / 2
    shift = 0.5 * (math.log(nth) + math.log(after))
    sae.log_threshold.add_(shift)
    return shift
