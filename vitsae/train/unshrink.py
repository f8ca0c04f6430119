"""`--unshrink` (ReLU): save the trained ReLU SAE as a JumpReLU SAE with the same support and larger codes.

A ReLU feature's bias b_f is both its threshold and a shrinkage: every active code is
w_f . (x - b_dec) + b_f, i.e. lowered by |b_f| when b_f < 0. At a low L0 the bias must be a few standard
deviations of the interference, so the codes are shrunk by most of their size. The JumpReLU form
(Rajamanoharan et al. 2024, "Jumping ahead: improving reconstruction fidelity with JumpReLU sparse
autoencoders") separates the two: code = z * H(z - theta). Here, with m_f = max(-b_f, 0),

    z_f = w_f . (x - b_dec) + b_f + alpha * m_f,    theta_f = alpha * m_f

fires exactly where the ReLU fired (z_f > theta_f <=> the ReLU pre-activation > 0) and its code is the ReLU
code plus alpha * m_f. One scalar alpha >= 0 per SAE is fitted by least squares on training rows: with
r = x - x_hat(ReLU) and u = sum over active f of m_f d_f, the reconstruction error ||r - alpha u||^2 is
smallest at alpha = <r, u> / ||u||^2. Fitting magnitudes with the support fixed is the fine-tuning against
shrinkage of Wright & Sharkey 2024 ("Addressing feature suppression in SAEs"), reduced to one number.
`UnshrinkFit` sums <r, u>, ||u||^2 and ||r||^2 over the last `FIT_FRACTION` of the training steps (the
SAE after each step, on the step's full batch); `unshrunk_jumprelu` builds the JumpReLU SAE, with decoder
rows at unit norm (their norms moved into the encoder, biases and thresholds). Measured in docs/training.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

import torch

from vitsae.sae.model import SparseAutoencoder

FIT_FRACTION = 0.05  # the last 5% of the steps (at least one) fit alpha
MIN_THRESHOLD = 1e-6  # theta of a feature whose bias is >= 0 (JumpReLU thresholds are positive)


def fit_steps(total_steps: int) -> int:
    """How many of the last steps fit alpha."""
    return max(math.ceil(FIT_FRACTION * total_steps), 1)


@dataclass
class UnshrinkFit:
    """The sums alpha is fitted from (float64, summed over the fit steps' rows); a checkpoint holds them."""

    resid_dot_u: float = 0.0
    u_sq: float = 0.0
    resid_sq: float = 0.0

    @torch.no_grad()
    def update(self, sae: SparseAutoencoder, x_BD: torch.Tensor) -> None:
        """Add a batch of normalised rows, reconstructed by the ReLU SAE as it is now."""
        pre_BF = sae.pre_activations(x_BD, normalized=True)
        active_BF = pre_BF > 0
        resid_BD = x_BD - ((pre_BF * active_BF) @ sae.W_dec + sae.b_dec)
        u_BD = (active_BF * (-sae.b_enc).clamp_min(0)) @ sae.W_dec
        self.resid_dot_u += float((resid_BD.double() * u_BD.double()).sum())
        self.u_sq += float(u_BD.double().square().sum())
        self.resid_sq += float(resid_BD.double().square().sum())

    @property
    def alpha(self) -> float:
        """The least-squares factor, at least 0 (0 when nothing was measured)."""
        return max(self.resid_dot_u / self.u_sq, 0.0) if self.u_sq > 0 else 0.0

    @property
    def error_ratio(self) -> float:
        """Squared reconstruction error with alpha over without, on the fit rows."""
        if self.resid_sq <= 0:
            return 1.0
        a = self.alpha
        return (self.resid_sq - 2 * a * self.resid_dot_u + a * a * self.u_sq) / self.resid_sq

    def state(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> UnshrinkFit:
        return cls(**state)


@torch.no_grad()
def unshrunk_jumprelu(sae: SparseAutoencoder, alpha: float) -> SparseAutoencoder:
    """The JumpReLU SAE with the ReLU SAE `sae`'s support and codes raised by alpha * max(-b_enc, 0)."""
    raise_F = alpha * (-sae.b_enc).clamp_min(0)
    threshold_F = raise_F.clamp_min(MIN_THRESHOLD)
    norm_F = sae.W_dec.norm(dim=-1).clamp_min(1e-12)
    cfg = dataclasses.replace(sae.cfg, architecture="jumprelu")
    out = SparseAutoencoder(cfg).to(sae.W_dec.device)
    out.W_dec.copy_(sae.W_dec / norm_F[:, None])
    out.W_enc.copy_(sae.W_enc * norm_F)
    out.b_enc.copy_((sae.b_enc + threshold_F) * norm_F)
    out.b_dec.copy_(sae.b_dec)
    out.log_threshold.copy_((threshold_F * norm_F).log())
    return out.train(sae.training)
