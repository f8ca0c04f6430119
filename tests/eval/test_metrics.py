"""Reconstruction metrics against values computed by hand."""

import math

import pytest
import torch

from vitsae.eval import ReconstructionStats, evaluate_sae, reconstruction_metrics
from vitsae.sae import SAEConfig, SparseAutoencoder

# Two rows in 2-D. x = [[1, 0], [3, 4]], x_hat = [[1, 1], [3, 2]]:
#   residuals [[0, -1], [0, 2]]: squared errors per row 1 and 4, total 5.
#   mean(x) = [2, 2]; sum ||x - mean||^2 = (1 + 4) + (1 + 4) = 10, so FVU = 5 / 10 = 0.5.
#   MSE = 5 / (2 rows * 2 dims) = 1.25.
#   residual mean = [0, 0.5]; sum ||r - mean(r)||^2 = 0 + (1.5^2 + 1.5^2) = 4.5, EV = 1 - 4.5 / 10 = 0.55.
#   cos(x0, x0_hat) = 1 / sqrt(2); cos(x1, x1_hat) = (9 + 8) / (5 * sqrt(13)).
X = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
X_HAT = torch.tensor([[1.0, 1.0], [3.0, 2.0]])
CODES = torch.tensor([[0.0, 2.0, 0.0], [-1.0, 0.5, 0.0]])


def test_metrics_match_hand_computed_values():
    m = reconstruction_metrics(X, X_HAT, CODES)
    assert m["mse"] == pytest.approx(1.25)
    assert m["fvu"] == pytest.approx(0.5)
    assert m["explained_variance"] == pytest.approx(0.55)
    assert m["cosine"] == pytest.approx((1 / math.sqrt(2) + 17 / (5 * math.sqrt(13))) / 2)
    assert m["l0"] == pytest.approx(1.5)
    assert m["l1"] == pytest.approx(1.75)
    assert m["never_fired_fraction"] == pytest.approx(1 / 3)


def test_streaming_over_batches_equals_one_batch():
    x, noise = torch.randn(40, 5) + 2.0, 0.3 * torch.randn(40, 5)
    whole = reconstruction_metrics(x, x + noise)
    stats = ReconstructionStats()
    for rows in (slice(0, 7), slice(7, 30), slice(30, 40)):
        stats.update(x[rows], (x + noise)[rows])
    for key, value in stats.summary().items():
        assert value == pytest.approx(whole[key], rel=1e-12)


def test_perfect_and_mean_reconstructions():
    x = torch.randn(10, 3)
    perfect = reconstruction_metrics(x, x.clone())
    assert (
        perfect["fvu"] == 0 and perfect["explained_variance"] == 1 and perfect["cosine"] == pytest.approx(1)
    )
    mean_only = reconstruction_metrics(x, x.mean(0).expand_as(x))
    assert mean_only["fvu"] == pytest.approx(1.0)


def test_evaluate_sae_streams_batches_in_raw_units():
    sae = SparseAutoencoder(SAEConfig(d_in=4, expansion_factor=2, norm_scale=2.0)).train()
    batches = [torch.randn(5, 4), torch.randn(3, 4)]
    m = evaluate_sae(sae, batches)
    x = torch.cat(batches)
    with torch.no_grad():
        expected = reconstruction_metrics(x, sae(x), sae.encode(x))
    assert m == pytest.approx(expected)
    assert sae.training


def test_shape_mismatch_and_empty_input_are_errors():
    with pytest.raises(ValueError, match=r"x \(2, 2\) and x_hat \(2, 3\) differ"):
        reconstruction_metrics(X, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no rows"):
        ReconstructionStats().summary()
