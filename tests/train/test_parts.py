"""Schedules, sweep expansion, dead-feature handling, divergence errors and plain-iterable input."""

import math

import pytest
import torch

from tests.helpers import tiny_train_config
from vitsae.sae import SAEConfig, SparseAutoencoder
from vitsae.train import TrainConfig, Trainer, TrainingDiverged, expand_sweep
from vitsae.train.checkpoint import latest_checkpoint
from vitsae.train.data import TensorBatches
from vitsae.train.dead import DeadFeatureTracker, auxk_loss, resample_dead
from vitsae.train.metrics_log import density_histogram
from vitsae.train.schedules import lr_factor, penalty_factor


def test_lr_schedule_values():
    # 4 warm-up steps, flat until step 60 of 100, then decay to a floor of 0.1.
    def f(step, decay):
        return lr_factor(step, 100, 4, decay, 0.6, 0.1)

    assert [f(s, "linear") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(59, "linear") == 1.0 and f(60, "linear") == 1.0
    assert f(80, "linear") == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(80, "cosine") == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert f(100, "linear") == pytest.approx(0.1) and f(100, "cosine") == pytest.approx(0.1)
    assert f(90, "constant") == 1.0
    with pytest.raises(ValueError, match=r"unknown lr decay 'step'; valid"):
        f(90, "step")
    assert [penalty_factor(s, 4) for s in (0, 1, 3, 10)] == [0.25, 0.5, 1.0, 1.0]
    assert penalty_factor(0, 0) == 1.0


def test_sweep_expands_only_the_values_an_architecture_uses():
    cfg = TrainConfig(
        architecture="topk", expansion_factor=(2, 4), k=(8, 16), l1_coefficient=(1.0, 2.0), lr=(1e-3,)
    )
    runs = expand_sweep(cfg, d_in=32, hook_name="h")
    assert [r.name for r in runs] == [
        "topk_x2_k8_lr0.001",
        "topk_x2_k16_lr0.001",
        "topk_x4_k8_lr0.001",
        "topk_x4_k16_lr0.001",
    ]
    assert runs[2].sae.d_sae == 128 and runs[2].sae.hook_name == "h"
    relu = expand_sweep(TrainConfig(k=(8, 16), l1_coefficient=(1.0, 2.0), lr=(1e-3, 1e-4)), d_in=4)
    assert [r.name for r in relu] == [
        "relu_x8_l1_1_lr0.001",
        "relu_x8_l1_1_lr0.0001",
        "relu_x8_l1_2_lr0.001",
        "relu_x8_l1_2_lr0.0001",
    ]
    with pytest.raises(ValueError, match="l1_coefficient needs at least one value"):
        TrainConfig(l1_coefficient=())
    targets = expand_sweep(TrainConfig(target_l0=(8, 16), lr=(1e-3,)), d_in=4)
    assert [(r.name, r.target_l0) for r in targets] == [
        ("relu_x8_l0_8_lr0.001", 8),
        ("relu_x8_l0_16_lr0.001", 16),
    ]
    with pytest.raises(ValueError, match="use --k for topk"):
        TrainConfig(architecture="topk", target_l0=(8,))


def test_dead_tracker_counts_tokens_since_firing():
    tracker = DeadFeatureTracker(3, dead_tokens=100)
    tracker.update(torch.tensor([1.0, 0.0, 0.0]), 60)
    tracker.update(torch.tensor([0.0, 2.0, 0.0]), 60)
    assert tracker.tokens_since_fired_F.tolist() == [60, 0, 120]
    assert tracker.dead_mask_F.tolist() == [False, False, True]
    assert tracker.dead_fraction() == pytest.approx(1 / 3)


def test_auxk_loss_by_hand():
    # one dead feature (index 1) with pre-activation 2 in row 0 and -1 in row 1; its decoder row is [1, 0].
    x = torch.tensor([[3.0, 1.0], [0.0, 1.0]])
    recon = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    pre = torch.tensor([[5.0, 2.0], [5.0, -1.0]])
    W_dec = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss = auxk_loss(x, recon, pre, W_dec, torch.tensor([False, True]), k_aux=4)
    # residuals e = [[2, 0], [0, 1]], e_hat = [[2, 0], [0, 0]] -> error (0 + 1) / 2 = 0.5
    # mean(e) = [1, 0.5]; ||e - mean||^2 per row = 1 + 0.25 = 1.25 -> scale 1.25
    assert float(loss) == pytest.approx(0.5 / 1.25)
    assert float(auxk_loss(x, recon, pre, W_dec, torch.tensor([False, False]), 4)) == 0.0


def test_resampling_touches_only_dead_features_and_resets_their_adam_state():
    sae = SparseAutoencoder(SAEConfig(d_in=4, expansion_factor=2), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    x = torch.randn(32, 4)
    sae.forward_train(x).recon_BD.square().sum().backward()
    opt.step()
    before = {n: p.detach().clone() for n, p in sae.named_parameters()}
    dead = torch.zeros(8, dtype=torch.bool)
    dead[[1, 5]] = True
    assert resample_dead(sae, opt, x, dead, generator=torch.Generator().manual_seed(0)) == 2
    assert torch.equal(sae.W_dec[~dead], before["W_dec"][~dead])
    assert torch.equal(sae.W_enc[:, ~dead], before["W_enc"][:, ~dead])
    assert not torch.equal(sae.W_dec[dead], before["W_dec"][dead])
    assert (sae.b_enc[dead] == 0).all()
    assert (opt.state[sae.W_dec]["exp_avg"][dead] == 0).all()
    assert (opt.state[sae.W_dec]["exp_avg"][~dead] != 0).any()
    directions = sae.W_dec[dead] / sae.W_dec[dead].norm(dim=-1, keepdim=True)
    encoder_dirs = (sae.W_enc[:, dead] / sae.W_enc[:, dead].norm(dim=0)).T
    torch.testing.assert_close(directions, encoder_dirs)


def test_density_histogram_bins():
    counts = density_histogram(torch.tensor([0.0, 1e-9, 5e-4, 0.02, 0.5, 1.0]))
    assert counts == [2, 0, 0, 0, 1, 0, 1, 2]


def test_nan_loss_stops_naming_the_step_and_the_last_checkpoint(tmp_path):
    acts = torch.randn(16 * 12, 4)
    acts[16 * 7 + 3, 2] = float("nan")  # in the batch of step 7 (batches are unshuffled below)
    source = TensorBatches(acts, 16, shuffle=False)
    with pytest.raises(
        TrainingDiverged, match=r"loss became nan at step 7.*Last good checkpoint: .*step_000000005"
    ):
        Trainer(tiny_train_config(normalize="none"), source, tmp_path).fit()
    assert latest_checkpoint(tmp_path).name == "step_000000005"
    with pytest.raises(ValueError, match="first 8 activation batches contain NaN or inf"):
        Trainer(tiny_train_config(), source, tmp_path / "normalised").fit()


def test_plain_list_of_batches_trains_over_several_epochs(tmp_path):
    batches = [torch.randn(16, 4) for _ in range(5)]
    summaries = Trainer(tiny_train_config(), batches, tmp_path).fit()
    (summary,) = summaries.values()
    assert summary["steps"] == 12 and summary["tokens"] == 192


def test_a_one_shot_iterator_ends_training_early_with_a_warning(tmp_path):
    batches = (torch.randn(16, 4) for _ in range(7))
    with pytest.warns(UserWarning, match="no batches for epoch 1.*stops at step 7 of 12"):
        summaries = Trainer(tiny_train_config(), batches, tmp_path).fit()
    (summary,) = summaries.values()
    assert summary["steps"] == 7 and summary["final_metrics"]["step"] == 7
    assert latest_checkpoint(tmp_path).name == "step_000000007"


def test_a_source_without_batches_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="yielded no batches"):
        Trainer(tiny_train_config(), [], tmp_path).fit()
