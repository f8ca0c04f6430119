"""The sparse autoencoder module: one parametrisation for the ReLU, TopK, BatchTopK and JumpReLU variants.

x_hat = W_dec f(W_enc (x - b_dec) + b_enc) + b_dec with W_enc [D, F], W_dec [F, D]. The public calls
(`sae(x)`, `encode`, `encode_sparse`, `pre_activations`, `decode`, `decode_sparse`) take and give the
model's raw activations, as SAELens does: the recorded `norm_scale` multiplies them on the way in and
divides the reconstruction on the way out. The normalisation is the SAE's own business; the trainer,
which feeds already-normalised batches, says so with `normalized=True`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from vitsae import kernels
from vitsae.errors import InvalidValue
from vitsae.kernels import reference
from vitsae.kernels.codes import SparseCodes
from vitsae.sae import activations
from vitsae.sae.config import SAEConfig
from vitsae.sae.init import geometric_median, random_rows_at_norm


@dataclass
class TrainOutput:
    """What a training step needs from one forward pass.

    The sparse path fills `codes` and leaves `pre_BF` None, so nothing of size B x F reaches the losses;
    the dense path keeps `pre_BF` (AuxK reads it) and leaves `codes` None.
    """

    recon_BD: torch.Tensor
    fire_counts_F: torch.Tensor  # rows each feature is active in (int64)
    abs_sum: torch.Tensor  # sum of |code| over the batch, detached (the l1 metric)
    penalty_B: torch.Tensor | None  # per-row sparsity penalty with its gradient (ReLU, JumpReLU)
    codes: SparseCodes | None
    pre_BF: torch.Tensor | None


class SparseAutoencoder(nn.Module):
    """An SAE described by `cfg` (see `SAEConfig`)."""

    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        D, F = cfg.d_in, cfg.d_sae
        W_dec = random_rows_at_norm(F, D, cfg.initial_decoder_norm, generator)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.T.clone().contiguous())
        self.b_enc = nn.Parameter(torch.zeros(F))
        self.b_dec = nn.Parameter(torch.zeros(D))
        if cfg.architecture == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((F,), math.log(cfg.jumprelu_init_threshold)))
        if cfg.architecture == "batchtopk":
            self.register_buffer("threshold", torch.zeros((), dtype=torch.float64))

    # --- input/output scaling -------------------------------------------------------------------
    def _scale_in(self, x_BD: torch.Tensor, normalized: bool) -> torch.Tensor:
        x_BD = x_BD.to(self.W_enc.dtype)
        if not normalized and self.cfg.norm_scale is not None:
            return x_BD * self.cfg.norm_scale
        return x_BD

    def _scale_out(self, x_BD: torch.Tensor, normalized: bool) -> torch.Tensor:
        if not normalized and self.cfg.norm_scale is not None:
            return x_BD / self.cfg.norm_scale
        return x_BD

    def _check_width(self, x_BD: torch.Tensor) -> None:
        if x_BD.shape[-1] != self.cfg.d_in:
            raise InvalidValue(
                f"activations have width {x_BD.shape[-1]} (shape {tuple(x_BD.shape)}) but the SAE "
                f"expects d_in={self.cfg.d_in}"
            )

    # --- encoder ---------------------------------------------------------------------------------
    def pre_activations(self, x_BD: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """W_enc (x - b_dec) + b_enc of raw activations (already normalised ones with `normalized=True`)."""
        self._check_width(x_BD)
        x_BD = self._scale_in(x_BD, normalized)
        return (x_BD - self.b_dec) @ self.W_enc + self.b_enc

    @property
    def jumprelu_threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def _activate(self, pre_BF: torch.Tensor, world_size: int = 1) -> torch.Tensor:
        """The dense codes: ReLU and TopK as `vitsae.kernels.reference` defines them; JumpReLU with its
        straight-through threshold gradient and BatchTopK with its threshold from `sae/activations.py`."""
        arch = self.cfg.architecture
        if arch in ("relu", "topk"):
            return reference.activate(pre_BF, arch, self.cfg.k)
        if arch == "jumprelu":
            return activations.jumprelu(pre_BF, self.jumprelu_threshold, self.cfg.jumprelu_bandwidth)
        if self.training and world_size > 1:
            codes_BF, smallest = activations.batch_topk_relu_distributed(pre_BF, self.cfg.k, world_size)
            self._update_threshold(smallest)
            return codes_BF
        if self.training:
            codes_BF, smallest = activations.batch_topk_relu(pre_BF, self.cfg.k)
            self._update_threshold(smallest)
            return codes_BF
        return pre_BF * (pre_BF > self.threshold.to(pre_BF.dtype))

    @torch.no_grad()
    def _update_threshold(self, smallest: torch.Tensor) -> None:
        smallest = smallest.to(torch.float64)
        if self.threshold.item() == 0.0:
            self.threshold.copy_(smallest)
        else:
            rate = self.cfg.batchtopk_threshold_momentum
            self.threshold.mul_(1 - rate).add_(rate * smallest)

    def encode(self, x_BD: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """Dense feature activations `[B, F]`.

        BatchTopK keeps the top k * B of the batch in training mode and applies its learned
        threshold in eval mode.
        """
        return self._activate(self.pre_activations(x_BD, normalized))

    def encode_sparse(self, x_BD: torch.Tensor, normalized: bool = False) -> SparseCodes:
        """Feature activations as `SparseCodes` (TopK: K = k; otherwise K = the batch's largest count).

        TopK and ReLU run the fused encoder of `vitsae.kernels` (no B x F codes on CUDA).
        """
        if self.cfg.architecture in ("topk", "relu"):
            self._check_width(x_BD)
            k = self.cfg.k if self.cfg.architecture == "topk" else None
            return kernels.encode(
                self._scale_in(x_BD, normalized),
                self.W_enc,
                self.b_enc,
                self.b_dec,
                activation=self.cfg.architecture,
                k=k,
                backend="sparse",
            ).codes
        pre_BF = self.pre_activations(x_BD, normalized)
        return SparseCodes.from_dense(self._activate(pre_BF))

    # --- decoder ---------------------------------------------------------------------------------
    def decode(self, codes_BF: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """W_dec codes + b_dec, in raw units (the SAE's normalised units with `normalized=True`)."""
        return self._scale_out(codes_BF @ self.W_dec + self.b_dec, normalized)

    def decode_sparse(self, codes: SparseCodes, normalized: bool = False) -> torch.Tensor:
        """The same as `decode` of the dense codes, as a gather of the active decoder rows."""
        return self._scale_out(kernels.decode(codes, self.W_dec, self.b_dec, backend="sparse"), normalized)

    def forward(self, x_BD: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """The reconstruction x_hat, through the path `cfg.backend` selects."""
        if self.cfg.resolved_backend == "sparse":
            return self.decode_sparse(self.encode_sparse(x_BD, normalized), normalized)
        return self.decode(self.encode(x_BD, normalized), normalized)

    def forward_train(self, x_BD: torch.Tensor, world_size: int = 1) -> TrainOutput:
        """Reconstruction plus what the losses and statistics need (normalised units).

        ReLU's penalty is the decoder-norm-weighted L1, JumpReLU's the L0 through the straight-through
        estimator; TopK and BatchTopK have none. When `cfg.trains_sparse` holds, the fused kernels encode and
        decode and the backward touches only active (row, feature) pairs. Under data parallelism
        `world_size` > 1 makes BatchTopK select over every rank's rows together (on the dense path).
        """
        if self.cfg.trains_sparse(self.training, world_size):
            return self._forward_train_sparse(x_BD)
        arch = self.cfg.architecture
        pre_BF = self.pre_activations(x_BD, normalized=True)
        codes_BF = self._activate(pre_BF, world_size)
        recon_BD = codes_BF @ self.W_dec + self.b_dec
        if arch == "jumprelu":
            active_BF = activations.step(pre_BF, self.jumprelu_threshold, self.cfg.jumprelu_bandwidth)
            penalty_B = active_BF.sum(-1)
        elif arch == "relu":
            penalty_B = (codes_BF * self.W_dec.norm(dim=-1)).sum(-1)
        else:
            penalty_B = None
        fire_counts_F = (codes_BF != 0).sum(0)
        return TrainOutput(recon_BD, fire_counts_F, codes_BF.detach().abs().sum(), penalty_B, None, pre_BF)

    def _forward_train_sparse(self, x_BD: torch.Tensor) -> TrainOutput:
        self._check_width(x_BD)
        arch = self.cfg.architecture
        encoded = kernels.encode(
            self._scale_in(x_BD, normalized=True),
            self.W_enc,
            self.b_enc,
            self.b_dec,
            activation=arch,
            k=None if arch == "relu" else self.cfg.k,
            l1_weights_F=self.W_dec.norm(dim=-1) if arch == "relu" else None,
            backend="sparse",
        )
        codes = encoded.codes
        if arch == "batchtopk":
            kept = codes.values_BK.detach()[codes.used_BK]
            self._update_threshold(kept.min() if kept.numel() else kept.new_zeros(()))
        recon_BD = kernels.decode(codes, self.W_dec, self.b_dec, backend="sparse")
        abs_sum = codes.values_BK.detach().abs().sum()
        return TrainOutput(recon_BD, encoded.fire_counts_F, abs_sum, encoded.l1_B, codes, None)

    # --- initialisation and constraints ----------------------------------------------------------
    @torch.no_grad()
    def init_b_dec(self, sample_ND: torch.Tensor) -> None:
        """Set b_dec from a sample of (normalised) activations, as `cfg.b_dec_init` says."""
        self._check_width(sample_ND)
        method = self.cfg.b_dec_init
        if method == "geometric_median":
            self.b_dec.copy_(geometric_median(sample_ND.to(self.b_dec.dtype)))
        elif method == "mean":
            self.b_dec.copy_(sample_ND.to(self.b_dec.dtype).mean(0))
        else:
            self.b_dec.zero_()

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Scale decoder rows to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove from W_dec's gradient its part along each row, so a step keeps row norms to first order."""
        if self.W_dec.grad is None:
            return
        rows_FD = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        along_F = (self.W_dec.grad * rows_FD).sum(-1, keepdim=True)
        self.W_dec.grad.sub_(along_F * rows_FD)

    def with_config(self, **changes) -> SparseAutoencoder:
        """Replace config fields that do not change the parameters' shapes (e.g. norm_scale, store)."""
        new_cfg = dataclasses.replace(self.cfg, **changes)
        if (new_cfg.d_in, new_cfg.d_sae, new_cfg.architecture) != (
            self.cfg.d_in,
            self.cfg.d_sae,
            self.cfg.architecture,
        ):
            raise InvalidValue("with_config cannot change d_in, expansion_factor or architecture")
        self.cfg = new_cfg
        return self
