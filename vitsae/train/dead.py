"""Dead features: tokens since each feature last fired, and the two ways to revive them.

- Resampling (Bricken et al. 2023): a dead feature's decoder row is pointed at an input the SAE
  reconstructs badly (drawn with probability proportional to its squared loss), its encoder column at the
  same direction at 0.2 times the mean live encoder norm, its bias zeroed and its Adam state reset.
- AuxK (Gao et al. 2024): the residual x - x_hat is reconstructed from the top-k_aux dead features'
  pre-activations; the normalised error of that is added to the loss, so dead features get gradient.
  `auxk_loss` reads the dense pre-activations; `auxk_loss_sparse` (the sparse backend) encodes only the
  dead features' columns and decodes their top k_aux sparsely.
"""

from __future__ import annotations

import math

import torch

from vitsae import kernels
from vitsae.eval.metrics import RARE_RATE
from vitsae.kernels.codes import SparseCodes
from vitsae.sae.model import SparseAutoencoder
from vitsae.train.distributed import all_reduce_sum


class DeadFeatureTracker:
    """Which features stopped firing, counted the two ways a user needs (docs/training.md, "Dead features").

    - `dead_mask_F`: no firing in the last `dead_tokens` training rows (what AuxK and resampling revive);
      `dead_fraction` is its mean: the dead fraction over the last window, at every step.
    - `rare_fraction`: the fraction of features that fired on fewer than 1 row in 10^5
      (`vitsae.eval.metrics.RARE_RATE`) over the last completed window of `dead_tokens` rows (at least
      10^5 of them), i.e. features a held-out evaluation sees as never firing even though they fire now and
      then in training. None until the first window completes.
    Counts are float64, so they stay exact far beyond 2^24.
    """

    def __init__(self, n_features: int, dead_tokens: int, device: torch.device | str = "cpu") -> None:
        self.dead_tokens = dead_tokens
        self.rare_window = max(dead_tokens, math.ceil(1 / RARE_RATE))
        self.tokens_since_fired_F = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.window_fired_F = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.window_tokens = 0
        self.rare_fraction: float | None = None

    def update(self, fired_count_F: torch.Tensor, n_tokens: int) -> None:
        """Advance by a batch of `n_tokens` in which feature f fired `fired_count_F[f]` times."""
        self.tokens_since_fired_F += n_tokens
        self.tokens_since_fired_F[fired_count_F > 0] = 0
        self.window_fired_F += fired_count_F
        self.window_tokens += n_tokens
        if self.window_tokens >= self.rare_window:
            rare_F = self.window_fired_F < RARE_RATE * self.window_tokens
            self.rare_fraction = float(rare_F.double().mean())
            self.window_fired_F.zero_()
            self.window_tokens = 0

    @property
    def dead_mask_F(self) -> torch.Tensor:
        return self.tokens_since_fired_F >= self.dead_tokens

    def dead_fraction(self) -> float:
        return float(self.dead_mask_F.double().mean())

    def state(self) -> dict[str, float | int | None]:
        """The scalar state a checkpoint holds (the per-feature counts are tensors beside it)."""
        return {"window_tokens": self.window_tokens, "rare_fraction": self.rare_fraction}

    def load_state(self, state: dict) -> None:
        self.window_tokens = state["window_tokens"]
        self.rare_fraction = state["rare_fraction"]


def auxk_loss(
    x_BD: torch.Tensor,
    recon_BD: torch.Tensor,
    pre_BF: torch.Tensor,
    W_dec_FD: torch.Tensor,
    dead_mask_F: torch.Tensor,
    k_aux: int,
    world_size: int = 1,
) -> torch.Tensor:
    """||e - e_hat||^2 / ||e - mean(e)||^2 with e = x - x_hat and e_hat from the top-k_aux dead features.

    Both are means over rows; the denominator (a constant for the gradient) is taken over every rank's
    rows, so data-parallel training computes the same loss as one process on the whole batch.
    """
    n_dead = int(dead_mask_F.sum())
    if n_dead == 0:
        return pre_BF.new_zeros(())
    resid_BD = (x_BD - recon_BD).detach()
    dead_pre_BF = torch.where(dead_mask_F, pre_BF, torch.full_like(pre_BF, -torch.inf))
    values_BK, indices_BK = dead_pre_BF.topk(min(k_aux, n_dead), dim=-1, sorted=False)
    codes_BF = torch.zeros_like(pre_BF).scatter(-1, indices_BK, values_BK.relu())
    return _normalised_error(resid_BD, codes_BF @ W_dec_FD, world_size)


def auxk_loss_sparse(
    sae: SparseAutoencoder,
    x_BD: torch.Tensor,
    recon_BD: torch.Tensor,
    dead_mask_F: torch.Tensor,
    k_aux: int,
    world_size: int = 1,
) -> torch.Tensor:
    """`auxk_loss` without the B x F pre-activations: only the dead features' columns are encoded
    ((x - b_dec) W_enc[:, dead] + b_enc[dead]) and their top k_aux decoded as sparse codes."""
    dead_N = dead_mask_F.nonzero().squeeze(-1)
    if dead_N.numel() == 0:
        return recon_BD.new_zeros(())
    resid_BD = (x_BD - recon_BD).detach()
    dead_pre_BN = (x_BD - sae.b_dec) @ sae.W_enc[:, dead_N] + sae.b_enc[dead_N]
    values_BK, slots_BK = dead_pre_BN.topk(min(k_aux, dead_N.numel()), dim=-1, sorted=False)
    counts_B = torch.full((x_BD.shape[0],), values_BK.shape[1], dtype=torch.int32, device=x_BD.device)
    codes = SparseCodes(dead_N[slots_BK].to(torch.int32), values_BK.relu(), counts_B)
    resid_hat_BD = kernels.decode(codes, sae.W_dec, None, backend="sparse")
    return _normalised_error(resid_BD, resid_hat_BD, world_size)


def _normalised_error(resid_BD: torch.Tensor, resid_hat_BD: torch.Tensor, world_size: int) -> torch.Tensor:
    err = (resid_BD - resid_hat_BD).square().sum(-1).mean()
    sums = torch.cat(
        [resid_BD.new_tensor([resid_BD.shape[0]]), resid_BD.square().sum()[None], resid_BD.sum(0)]
    )
    sums = all_reduce_sum(sums.double(), world_size)
    rows = sums[0]
    scale = ((sums[1] - sums[2:].square().sum() / rows) / rows).clamp_min(1e-12)
    return err / scale.to(err.dtype)


@torch.no_grad()
def resample_dead(
    sae: SparseAutoencoder,
    optimizer: torch.optim.Adam,
    x_ND: torch.Tensor,
    dead_mask_F: torch.Tensor,
    generator: torch.Generator | None = None,
) -> int:
    """Re-initialise the dead features toward badly reconstructed rows of `x_ND`; returns how many."""
    dead = dead_mask_F.nonzero().squeeze(-1)
    if dead.numel() == 0:
        return 0
    was_training = sae.training
    sae.eval()
    loss_N = (x_ND - sae(x_ND, normalized=True)).square().sum(-1)
    sae.train(was_training)
    weights_N = loss_N.square().double()
    if not torch.isfinite(weights_N).all() or weights_N.sum() <= 0:
        weights_N = torch.ones_like(weights_N)
    picks = torch.multinomial(weights_N.cpu(), dead.numel(), replacement=True, generator=generator)
    dirs_KD = x_ND[picks.to(x_ND.device)] - sae.b_dec
    dirs_KD = dirs_KD / dirs_KD.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    alive = ~dead_mask_F
    if alive.any():
        enc_norm = float(sae.W_enc[:, alive].norm(dim=0).mean())
        dec_norm = float(sae.W_dec[alive].norm(dim=-1).mean())
    else:
        enc_norm = dec_norm = 1.0
    if sae.cfg.unit_norm_decoder:
        dec_norm = 1.0
    sae.W_dec[dead] = dirs_KD * dec_norm
    sae.W_enc[:, dead] = dirs_KD.T * (0.2 * enc_norm)
    sae.b_enc[dead] = 0.0
    for param, rows in ((sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead)), (sae.b_enc, (dead,))):
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][rows] = 0.0
    return dead.numel()
