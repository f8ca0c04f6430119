"""`--unshrink`: the JumpReLU made from a ReLU SAE fires where the ReLU fired, with codes raised by
alpha * max(-b_enc, 0), and alpha is the least-squares factor on the rows it was fitted on."""

import json

import torch

from tests.helpers import tiny_train_config
from tests.train.test_resume import assert_same_saes, straight_and_resumed
from vitsae.eval.metrics import reconstruction_metrics
from vitsae.sae import load_sae
from vitsae.sae.config import SAEConfig
from vitsae.sae.model import SparseAutoencoder
from vitsae.train import TensorBatches, Trainer
from vitsae.train.synthetic import sparse_dictionary_data
from vitsae.train.unshrink import UnshrinkFit, unshrunk_jumprelu


def relu_sae() -> SparseAutoencoder:
    generator = torch.Generator().manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=8, expansion_factor=4), generator=generator)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(32, 1, generator=generator) * 20 + 1)  # unequal decoder norms
        sae.b_enc.copy_(torch.randn(32, generator=generator) * 0.1)  # some biases > 0, most < 0
        sae.b_dec.copy_(torch.randn(8, generator=generator))
    return sae.eval()


def test_unshrunk_jumprelu_keeps_the_support_and_raises_the_codes():
    sae = relu_sae()
    x_ND = torch.randn(512, 8, generator=torch.Generator().manual_seed(1)) * 3
    pre_NF = sae.pre_activations(x_ND, normalized=True)
    raise_NF = (pre_NF > 0) * (-sae.b_enc).clamp_min(0)
    for alpha in (0.0, 0.6, 1.7):
        jump = unshrunk_jumprelu(sae, alpha)
        assert jump.cfg.architecture == "jumprelu"
        torch.testing.assert_close(jump.W_dec.norm(dim=-1), torch.ones(32))
        codes_NF = jump.encode(x_ND, normalized=True)
        assert torch.equal(codes_NF != 0, pre_NF > 0)
        expected_ND = sae.decode(sae.encode(x_ND, normalized=True) + alpha * raise_NF, normalized=True)
        torch.testing.assert_close(jump(x_ND, normalized=True), expected_ND, atol=1e-4, rtol=1e-4)


def test_alpha_is_the_least_squares_factor_of_the_fit_rows():
    sae = relu_sae()
    x_ND = torch.randn(512, 8, generator=torch.Generator().manual_seed(2)) * 3
    fit = UnshrinkFit()
    fit.update(sae, x_ND[:256])
    fit.update(sae, x_ND[256:])
    errors = {}
    for alpha in (fit.alpha - 0.05, fit.alpha, fit.alpha + 0.05):
        recon_ND = unshrunk_jumprelu(sae, alpha)(x_ND, normalized=True)
        errors[alpha] = reconstruction_metrics(x_ND, recon_ND)["mse"]
    assert min(errors, key=errors.get) == fit.alpha
    relu_mse = reconstruction_metrics(x_ND, sae(x_ND, normalized=True))["mse"]
    assert abs(errors[fit.alpha] / relu_mse - fit.error_ratio) < 1e-4
    assert UnshrinkFit.from_state(fit.state()) == fit


def test_a_run_resumed_inside_the_fit_saves_the_same_unshrunk_sae(tmp_path):
    """The fit's sums are in the checkpoint: a crash between two fit steps (checkpoint at step 97 of 100,
    the fit on steps 95-99) resumes to the same alpha and the same JumpReLU, and so does rerunning the
    finished run."""
    acts, _ = sparse_dictionary_data(1600, d=8, n_atoms=24, active=3, seed=4)
    source = TensorBatches(acts, 16, seed=1)
    cfg = tiny_train_config(architecture="relu", target_l0=(3.0,), total_tokens=16 * 100, checkpoint_every=97)
    (name,) = straight_and_resumed(cfg, source, tmp_path, crash_at_step=98)
    summaries = [json.loads((tmp_path / d / "sweep.json").read_text())[name] for d in ("straight", "resumed")]
    assert summaries[0]["unshrink"] == summaries[1]["unshrink"] and summaries[0]["unshrink"]["alpha"] > 0
    Trainer(cfg, source, tmp_path / "straight").fit()  # the finished run: finish again from its checkpoint
    assert_same_saes(tmp_path / "straight", tmp_path / "resumed")
    assert load_sae(tmp_path / "resumed" / name).cfg.architecture == "jumprelu"
