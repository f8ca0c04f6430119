"""The dense reference against hand-computed values (it is the yardstick of every other test)."""

import pytest
import torch

from vitsae.kernels import reference


def test_activations_by_hand():
    pre_BF = torch.tensor([[1.0, -2.0, 3.0, 0.5], [-1.0, -0.5, 0.25, 2.0]])
    assert reference.activate(pre_BF, "relu").tolist() == [[1.0, 0.0, 3.0, 0.5], [0.0, 0.0, 0.25, 2.0]]
    assert reference.activate(pre_BF, "topk", k=2).tolist() == [[1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.25, 2.0]]
    # A top-k entry that is negative is cut by the ReLU.
    assert reference.activate(pre_BF, "topk", k=3)[1].tolist() == [0.0, 0.0, 0.25, 2.0]
    # The batch keeps its 2 * 2 largest: 3, 2, 1 and 0.5.
    batch_top4 = [[1.0, 0.0, 3.0, 0.5], [0.0, 0.0, 0.0, 2.0]]
    assert reference.activate(pre_BF, "batchtopk", k=2).tolist() == batch_top4
    threshold_F = torch.tensor([0.5, -3.0, 3.0, 0.4])
    assert reference.activate(pre_BF, "jumprelu", threshold_F=threshold_F).tolist() == [
        [1.0, -2.0, 0.0, 0.5],
        [0.0, -0.5, 0.0, 2.0],
    ]


def test_l1_decode_and_counts_by_hand():
    codes_BF = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    assert reference.weighted_l1(codes_BF, torch.tensor([2.0, 5.0, 0.5])).tolist() == [3.0, 1.5]
    W_dec_FD = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert reference.decode(codes_BF, W_dec_FD, torch.tensor([0.5, 0.0])).tolist() == [[3.5, 2.0], [3.5, 3.0]]
    assert reference.firing_counts(codes_BF).tolist() == [1, 0, 2]


def test_pre_activations_fold_the_decoder_bias():
    x_BD = torch.tensor([[1.0, 2.0]])
    W_enc_DF = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    got = reference.pre_activations(x_BD, W_enc_DF, torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert got.tolist() == [[0.0, 2.0, 1.0]]


def test_bad_activation_arguments_name_the_valid_choices():
    pre_BF = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="relu, jumprelu, topk, batchtopk"):
        reference.activate(pre_BF, "gelu")
    with pytest.raises(ValueError, match="k >= 1"):
        reference.activate(pre_BF, "topk", k=0)
    with pytest.raises(ValueError, match="threshold_F"):
        reference.activate(pre_BF, "jumprelu")
