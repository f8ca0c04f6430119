"""Training on the sparse backend: the same loss and gradients as the dense backend, and no B x F tensor."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vitsae.kernels import sparse_torch
from vitsae.sae import SAEConfig, SparseAutoencoder
from vitsae.train import TensorBatches, TrainConfig, Trainer
from vitsae.train import trainer as trainer_module
from vitsae.train.dead import auxk_loss, auxk_loss_sparse


def make_pair(architecture: str, d_in: int, expansion_factor: int, k: int, seed: int = 0):
    """Two float64 SAEs with the same random weights, one on each backend."""
    saes = []
    for backend in ("dense", "sparse"):
        cfg = SAEConfig(
            d_in=d_in, expansion_factor=expansion_factor, architecture=architecture, k=k, backend=backend
        )
        sae = SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(seed)).double().train()
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed + 1)
            sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=gen, dtype=torch.float64) / d_in**0.5)
            sae.b_enc.copy_(0.1 * torch.randn(sae.b_enc.shape, generator=gen, dtype=torch.float64) - 0.1)
            sae.b_dec.copy_(0.1 * torch.randn(sae.b_dec.shape, generator=gen, dtype=torch.float64))
        saes.append(sae)
    return saes


def training_loss(sae: SparseAutoencoder, x_BD: torch.Tensor, dead_mask_F: torch.Tensor, k_aux: int) -> dict:
    """The trainer's loss (reconstruction + penalty + AuxK), backpropagated; returns values and grads."""
    out = sae.forward_train(x_BD)
    recon_loss = (x_BD - out.recon_BD).square().sum(-1).mean()
    penalty = recon_loss.new_zeros(()) if out.penalty_B is None else out.penalty_B.mean()
    if out.pre_BF is None:
        aux = auxk_loss_sparse(sae, x_BD, out.recon_BD, dead_mask_F, k_aux)
    else:
        aux = auxk_loss(x_BD, out.recon_BD, out.pre_BF, sae.W_dec, dead_mask_F, k_aux)
    loss = recon_loss + 0.7 * penalty + 0.5 * aux
    loss.backward()
    result = {"loss": loss.detach(), "aux": aux.detach(), "penalty": penalty.detach(), "l1": out.abs_sum}
    result.update({f"grad_{name}": p.grad for name, p in sae.named_parameters()})
    return result, out


@pytest.mark.parametrize("architecture", ["topk", "relu", "batchtopk"])
def test_sparse_step_matches_dense_step_in_float64(architecture):
    dense, sparse = make_pair(architecture, d_in=16, expansion_factor=8, k=5)
    x_BD = torch.randn(40, 16, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    dead_mask_F = torch.rand(128, generator=torch.Generator().manual_seed(8)) < 0.3
    want, out_dense = training_loss(dense, x_BD, dead_mask_F, k_aux=6)
    got, out_sparse = training_loss(sparse, x_BD, dead_mask_F, k_aux=6)
    assert out_dense.codes is None and out_sparse.codes is not None and out_sparse.pre_BF is None
    assert float(want["aux"]) > 0
    if architecture == "relu":
        assert float(want["penalty"]) > 0
    assert torch.equal(out_sparse.fire_counts_F, out_dense.fire_counts_F)
    assert int(out_sparse.fire_counts_F.sum()) > 0
    for name, value in want.items():
        torch.testing.assert_close(
            got[name], value, rtol=1e-10, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}"
        )
    if architecture == "batchtopk":
        assert float(dense.threshold) > 0
        assert float(sparse.threshold) == pytest.approx(float(dense.threshold), rel=1e-12)


class _Allocations(TorchDispatchMode):
    """Records the shapes of the strided tensors every op returns, except while `paused`."""

    def __init__(self):
        super().__init__()
        self.shapes = []
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                    self.shapes.append(tuple(t.shape))
        return out


@pytest.mark.parametrize("dead_handling", ["auxk", "none"])
def test_sparse_training_allocates_nothing_of_size_b_by_f(monkeypatch, tmp_path, dead_handling):
    """Whole trainer steps (losses, AuxK, backward, Adam, firing counts, metrics, checkpoint) on the CPU
    sparse path. Only the encoder's forward may form the B x F pre-activations: on a CPU its x W_enc
    matmul stays dense, so the recorder pauses inside it."""
    B, D, F = 64, 24, 24 * 32
    recorder = _Allocations()

    def unrecorded(fn):
        def call(*args):
            recorder.paused = True
            try:
                return fn(*args)
            finally:
                recorder.paused = False

        return call

    monkeypatch.setattr(sparse_torch, "encode_select", unrecorded(sparse_torch.encode_select))
    # a metric record's F x F scan, not part of a step
    monkeypatch.setattr(trainer_module, "duplicate_fraction", unrecorded(trainer_module.duplicate_fraction))
    cfg = TrainConfig(
        architecture="topk",
        expansion_factor=(32,),
        k=(4,),
        lr=(1e-3,),
        batch_size=B,
        total_tokens=B * 3,
        lr_warmup_steps=1,
        dead_handling=dead_handling,
        dead_tokens=B,
        b_dec_init="mean",
        norm_batches=1,
        log_every=3,
        checkpoint_every=3,
        backend="sparse",
        progress=False,
        plot=False,
    )
    acts = torch.randn(B * 3, D)
    with recorder:
        (summary,) = Trainer(cfg, TensorBatches(acts, B, shuffle=False), tmp_path).fit().values()
    if dead_handling == "auxk":
        assert summary["final_metrics"]["auxk_loss"] > 0  # AuxK ran on the dead features
    assert summary["final_metrics"]["l0"] == pytest.approx(4.0)
    assert recorder.shapes, "the recorder saw no operations"
    too_big = [s for s in recorder.shapes if torch.Size(s).numel() >= B * F]
    assert not too_big, too_big
