"""The geometric median (Weiszfeld) against cases with known answers and its defining property."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitsae.sae.init import geometric_median


def summed_distance(points, centre):
    return float((points - centre).norm(dim=-1).sum())


def test_collinear_points_have_the_middle_point_as_median():
    direction = torch.tensor([3.0, -4.0, 12.0], dtype=torch.float64) / 13
    positions = torch.tensor([-5.0, -1.0, 0.5, 2.0, 40.0], dtype=torch.float64)
    points = positions[:, None] * direction + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    expected = 0.5 * direction + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(geometric_median(points), expected, atol=1e-9, rtol=0)


def test_symmetric_points_have_their_centre_as_median():
    corners = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) + 7.0
    torch.testing.assert_close(geometric_median(corners), torch.tensor([7.0, 7.0]))


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 40), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_median_is_no_worse_than_the_mean_or_nearby_points(n, d, seed):
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(n, d, generator=generator, dtype=torch.float64) ** 3  # heavy tails
    median = geometric_median(points)
    best = summed_distance(points, median)
    assert best <= summed_distance(points, points.mean(0)) + 1e-9
    for _ in range(5):
        nudge = 1e-3 * torch.randn(d, generator=generator, dtype=torch.float64)
        # Weiszfeld stops at a relative step size, so optimality holds to a relative tolerance
        assert best <= summed_distance(points, median + nudge) * (1 + 1e-6)
