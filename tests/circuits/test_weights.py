"""Virtual weights read off the SAEs: the convolution's expanded weight and the candidates ranking."""

from __future__ import annotations

import torch
from torch import nn

from tests.helpers import random_sae, small_cnn
from vitsae.circuits.weights import candidates, conv_weights, weight_kind, weights_between


def test_the_expanded_conv_weight_is_the_convolution_of_one_decoder_row():
    model = small_cnn()
    conv = model.model.body[2]  # body.1 (ReLU output, 8 channels) -> body.2 (conv, 12 channels)
    sae_l = random_sae(8, "body.1", "relu", seed=1)
    sae_m = random_sae(12, "body.2", "relu", seed=2)
    assert weight_kind(model, "body.1", "body.2") == "conv"
    targets = torch.tensor([0, 7, 30])
    V_FJyx = conv_weights(conv, sae_l, sae_m, targets)
    for i in (0, 5, 31):
        # the decoder row (raw units) alone at input position (4, 4), through the conv without its bias
        x_CHW = torch.zeros(1, 8, 9, 9, dtype=torch.float64)
        x_CHW[0, :, 4, 4] = sae_l.W_dec[i].double() / sae_l.cfg.norm_scale
        out = nn.functional.conv2d(x_CHW, conv.weight.double(), stride=1, padding=1)[0]  # [12, 9, 9]
        pre_JHW = torch.einsum("chw,cj->jhw", out * sae_m.cfg.norm_scale, sae_m.W_enc[:, targets].double())
        # output (4 - dy + 1, 4 - dx + 1) reads input (4, 4) through kernel offset (dy, dx)
        for dy in range(3):
            for dx in range(3):
                expected = pre_JHW[:, 5 - dy, 5 - dx]
                assert torch.allclose(V_FJyx[i, :, dy, dx], expected, rtol=1e-9, atol=1e-12)
    kind, summed, per_offset = weights_between(model, "body.1", "body.2", sae_l, sae_m, targets)
    assert kind == "conv" and torch.allclose(summed, per_offset.sum((2, 3)))


def test_no_weight_path_between_hooks_it_does_not_know():
    model = small_cnn()
    assert weight_kind(model, "body.0", "body.1") is None  # a ReLU, not a convolution
    sae = random_sae(8, "body.0", seed=1)
    assert weights_between(model, "body.0", "body.1", sae, sae, torch.tensor([0])) == (None, None, None)


def test_candidates_rank_by_weight_times_mean_firing_activation():
    weights_FJ = torch.tensor([[1.0, -4.0], [-3.0, 1.0], [2.0, 0.5]], dtype=torch.float64)
    mean_active_F = torch.tensor([1.0, 1.0, 10.0])
    indices, scores = candidates(weights_FJ, mean_active_F, k=2)
    assert indices.tolist() == [[2, 1], [2, 0]]
    assert scores.tolist() == [[20.0, 3.0], [5.0, 4.0]]
