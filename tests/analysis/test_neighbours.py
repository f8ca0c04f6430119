"""Nearest features by decoder cosine and by co-activation, against brute force; the sampled co-firing
features of the statistics pass; grid-less stores still rank their top images."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.analysis.test_stats import accumulate, generated_codes
from vitsae.analysis.neighbours import (
    Neighbours,
    coactivation_neighbours,
    compute_neighbours,
    decoder_neighbours,
)
from vitsae.analysis.stats import FeatureStatsAccumulator, StatsConfig
from vitsae.tokens import TokenLayout


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.integers(1, 8), st.integers(1, 9), st.integers(0, 1000))
def test_decoder_neighbours_equal_brute_force_in_any_block_size(n_features, k, block, seed):
    W = torch.randn((n_features, 6), generator=torch.Generator().manual_seed(seed))
    index, cosine = decoder_neighbours(W, k, block=block)
    unit = torch.nn.functional.normalize(W, dim=1)
    full = unit @ unit.T
    for f in range(n_features):
        others = [(float(full[f, g]), g) for g in range(n_features) if g != f]
        want = sorted(others, reverse=True)[: min(k, n_features - 1)]
        torch.testing.assert_close(cosine[f], torch.tensor([c for c, _ in want]), atol=1e-5, rtol=0)
        assert f not in index[f].tolist()
        assert all(abs(float(full[f, int(g)]) - c) < 1e-5 for g, c in zip(index[f], cosine[f], strict=True))


def test_the_sample_keeps_each_tokens_strongest_features():
    codes = generated_codes(n_images=12, n_features=9, k_active=3)
    config = StatsConfig(n_samples=1000, co_slots=2)  # the sample holds every firing token
    stats = accumulate(codes, 9, config, images_per_batch=3)
    indices_NK, values_NK, image_N, token_N, _ = codes
    for f in range(8):
        valid = stats.sample_image_FS[f] >= 0
        got = sorted(
            (int(i), int(t), tuple(c.tolist()))
            for i, t, c in zip(
                stats.sample_image_FS[f][valid],
                stats.sample_token_FS[f][valid],
                stats.sample_cofire_FSc[f][valid],
                strict=True,
            )
        )
        want = []
        for n in range(image_N.numel()):
            firing = [(float(v), int(j)) for j, v in zip(indices_NK[n], values_NK[n], strict=True) if v > 0]
            if f in [j for _, j in firing]:
                strongest = [j for _, j in sorted(firing, reverse=True)[:2]]
                want.append(
                    (int(image_N[n]), int(token_N[n]), tuple(strongest + [-1] * (2 - len(strongest))))
                )
        assert got == sorted(want)


def test_coactivation_ranks_partners_by_jaccard():
    """Feature 0 fires with 1 on every token and with 2 on a few; 3 fires everywhere (low Jaccard with 0)."""
    layout = TokenLayout(1, 0, (2, 2), 4)
    acc = FeatureStatsAccumulator(5, layout, StatsConfig(n_samples=64, co_slots=4))
    n_images, n_tokens = 40, 5
    n = n_images * n_tokens
    indices = torch.full((n, 4), 4, dtype=torch.int64)
    values = torch.zeros((n, 4))
    indices[:, 0], values[:, 0] = 3, 1.0  # everywhere
    on = torch.arange(n) % 4 == 0
    indices[on, 1], values[on, 1] = 0, 2.0
    indices[on, 2], values[on, 2] = 1, 1.5
    few = on & (torch.arange(n) % 32 == 0)
    indices[few, 3], values[few, 3] = 2, 0.5
    acc.update(
        indices,
        values,
        torch.arange(n_images).repeat_interleave(n_tokens),
        torch.arange(n_tokens).repeat(n_images),
    )
    index, jaccard = coactivation_neighbours(acc.finish(), k=3)
    assert index[0].tolist() == [1, 3, 2] and jaccard[0, 0] == pytest.approx(1.0)
    assert jaccard[0, 1] == pytest.approx(50 / 200) and jaccard[0, 2] == pytest.approx(7 / 50)
    assert index[4].tolist() == [-1, -1, -1]  # never fires


def test_neighbours_round_trip_and_old_statistics_are_named(tmp_path):
    codes = generated_codes()
    stats = accumulate(codes, 9, StatsConfig(), images_per_batch=5)
    found = compute_neighbours(stats, torch.randn(9, 8), k=3)
    found.save(tmp_path)
    loaded = Neighbours.load(tmp_path)
    for name in ("decoder_index_Fk", "decoder_cosine_Fk", "coact_index_Fk", "coact_jaccard_Fk"):
        assert torch.equal(getattr(loaded, name), getattr(found, name))
    assert Neighbours.load(tmp_path / "nothing") is None
    stats.sample_cofire_FSc = None
    with pytest.raises(ValueError, match="predate the co-activation sample: rerun `vitsae stats`"):
        coactivation_neighbours(stats, 3)
    with pytest.raises(ValueError, match="the decoder has 4 features, the statistics 9"):
        compute_neighbours(stats, torch.randn(4, 8))


def test_a_store_without_a_patch_grid_ranks_images_by_their_strongest_token():
    layout = TokenLayout(n_cls=1, n_registers=2, grid_hw=None, width=8)
    acc = FeatureStatsAccumulator(3, layout, StatsConfig(k_images=4))
    image = torch.arange(6).repeat_interleave(3)
    token = torch.arange(3).repeat(6)
    values = torch.tensor([[0.5 * i + 0.1 * t] for i, t in zip(image.tolist(), token.tolist(), strict=True)])
    indices = torch.ones_like(values, dtype=torch.int64)
    acc.update(indices, values, image, token)
    stats = acc.finish()
    assert stats.top_image_index_Fk[1].tolist() == [5, 4, 3, 2]
    torch.testing.assert_close(stats.top_image_score_Fk[1], torch.tensor([2.7, 2.2, 1.7, 1.2]))
    assert stats.top_image_map_FkP.shape == (3, 4, 0) and (stats.top_patch_image_Fk == -1).all()
