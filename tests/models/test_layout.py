"""The token view of activations and the hook-name check (property tests)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitsae.models.layout import as_tokens, check_names


@settings(deadline=None, max_examples=30)
@given(batch=st.integers(1, 3), channels=st.integers(1, 5), height=st.integers(1, 6), width=st.integers(1, 6))
def test_maps_become_row_major_tokens(batch, channels, height, width):
    maps = torch.randn(batch, channels, height, width)
    tokens = as_tokens(maps)
    assert tokens.shape == (batch, height * width, channels)
    for row in range(height):
        for col in range(width):
            torch.testing.assert_close(tokens[:, row * width + col], maps[:, :, row, col], rtol=0, atol=0)


def test_vectors_and_sequences_as_tokens():
    assert as_tokens(torch.zeros(2, 7)).shape == (2, 1, 7)
    sequence = torch.randn(2, 5, 3)
    assert as_tokens(sequence) is sequence
    with pytest.raises(ValueError, match=r"cannot read activations of shape \(2, 3, 4, 5, 6\) as tokens"):
        as_tokens(torch.zeros(2, 3, 4, 5, 6))


def test_check_names_reports_every_unknown_name():
    with pytest.raises(ValueError, match=r"'a\.x'.*; 'zzz'\. Valid hook names: a\.b, a\.c"):
        check_names(["a.b", "a.x", "zzz"], ["a.b", "a.c"])
    check_names(["a.c"], ["a.b", "a.c"])
