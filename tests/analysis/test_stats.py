"""Streaming feature statistics against a brute-force computation on generated sparse codes."""

import numpy as np
import pytest
import torch

from vitsae.analysis.stats import FeatureStats, FeatureStatsAccumulator, StatsConfig
from vitsae.fileio import read_json, write_json_atomic
from vitsae.tokens import TokenLayout

GRID = TokenLayout(n_cls=1, n_registers=0, grid_hw=(3, 4), width=8)


def generated_codes(n_images=23, n_features=9, k_active=3, seed=0):
    """Rows of 13 tokens per image ([CLS] + 3x4 patches), each with k_active (feature, value) slots."""
    gen = torch.Generator().manual_seed(seed)
    n_tokens = GRID.n_prefix + GRID.n_patches
    image_N = torch.arange(n_images).repeat_interleave(n_tokens)
    token_N = torch.arange(n_tokens).repeat(n_images)
    n_rows = image_N.numel()
    indices_NK = torch.stack([torch.randperm(n_features, generator=gen)[:k_active] for _ in range(n_rows)])
    values_NK = torch.rand((n_rows, k_active), generator=gen) * 4
    values_NK[torch.rand((n_rows, k_active), generator=gen) < 0.5] = 0.0  # unused / non-firing slots
    values_NK[indices_NK == n_features - 1] = 0.0  # the last feature stays dead
    indices_NK[values_NK == 0] = 0
    label_N = (image_N % 4).long()
    return indices_NK.int(), values_NK, image_N, token_N, label_N


def brute_force(indices_NK, values_NK, image_N, token_N, n_features, config):
    """Every statistic from the dense [N, F] code matrix with plain loops."""
    n_rows = image_N.numel()
    dense = np.zeros((n_rows, n_features))
    for n in range(n_rows):
        for j in range(indices_NK.shape[1]):
            if values_NK[n, j] > 0:
                dense[n, int(indices_NK[n, j])] = float(values_NK[n, j])
    is_patch = (token_N >= GRID.n_prefix).numpy()
    out = {"fire": (dense > 0).sum(0), "sum": dense.sum(0), "images": {}, "patches": {}, "image_fire": {}}
    edges = config.hist_edges().numpy()
    out["hist"] = np.stack(
        [
            np.histogram(np.clip(dense[dense[:, f] > 0, f], edges[0], edges[-1] * 0.999), edges)[0]
            for f in range(n_features)
        ]
    )
    for f in range(n_features):
        per_image = {}
        for n in range(n_rows):
            if is_patch[n] and dense[n, f] > 0:
                i = int(image_N[n])
                per_image[i] = max(per_image.get(i, 0.0), dense[n, f])
        out["images"][f] = sorted(per_image.items(), key=lambda item: -item[1])[: config.k_images]
        patches = [(dense[n, f], int(image_N[n]), int(token_N[n])) for n in range(n_rows) if is_patch[n]]
        out["patches"][f] = sorted([p for p in patches if p[0] > 0], key=lambda p: -p[0])[: config.k_patches]
        out["image_fire"][f] = len({int(image_N[n]) for n in range(n_rows) if dense[n, f] > 0})
    out["dense"] = dense
    return out


def accumulate(codes, n_features, config, images_per_batch):
    indices_NK, values_NK, image_N, token_N, label_N = codes
    acc = FeatureStatsAccumulator(n_features, GRID, config)
    n_tokens = GRID.n_prefix + GRID.n_patches
    step = images_per_batch * n_tokens
    for start in range(0, image_N.numel(), step):
        sl = slice(start, start + step)
        perm = torch.randperm(image_N[sl].numel())  # row order within a batch does not matter
        acc.update(
            indices_NK[sl][perm], values_NK[sl][perm], image_N[sl][perm], token_N[sl][perm], label_N[sl][perm]
        )
    return acc.finish()


@pytest.mark.parametrize("images_per_batch", [1, 4, 23])
def test_streaming_statistics_equal_brute_force(images_per_batch):
    n_features = 9
    config = StatsConfig(k_images=5, k_patches=4, n_samples=6, hist_bins=8, hist_min=0.05, hist_max=5.0)
    codes = generated_codes(n_features=n_features)
    stats = accumulate(codes, n_features, config, images_per_batch)
    ref = brute_force(*codes[:4], n_features, config)
    indices_NK, values_NK, image_N, token_N, label_N = codes

    assert stats.n_tokens == image_N.numel() and stats.n_images == 23
    assert stats.fire_count_F.tolist() == ref["fire"].tolist()
    np.testing.assert_allclose(stats.act_sum_F.numpy(), ref["sum"], rtol=1e-6)
    np.testing.assert_allclose(stats.max_activation_F().numpy(), ref["dense"].max(0), rtol=1e-6)
    assert stats.hist_FH.tolist() == ref["hist"].tolist()
    assert stats.image_fire_count_F.tolist() == [ref["image_fire"][f] for f in range(n_features)]
    assert stats.fire_count_F[-1] == 0 and (stats.top_image_index_Fk[-1] == -1).all()
    for f in range(n_features):
        expected = ref["images"][f]
        n = len(expected)
        want_scores = [s for _, s in expected]
        np.testing.assert_allclose(stats.top_image_score_Fk[f, :n].numpy(), want_scores, rtol=1e-6)
        assert set(stats.top_image_index_Fk[f, :n].tolist()) == {i for i, _ in expected}
        assert (stats.top_image_index_Fk[f, n:] == -1).all()
        for rank in range(n):
            image = int(stats.top_image_index_Fk[f, rank])
            assert stats.top_image_label_Fk[f, rank] == image % 4
            rows = (image_N == image) & (token_N >= GRID.n_prefix)
            want = torch.from_numpy(ref["dense"][rows.numpy(), f]).float().reshape(GRID.grid_hw)
            got = stats.image_map(f, rank)
            assert torch.allclose(got, want, atol=float(stats.top_image_score_Fk[f, rank]) / 510 + 1e-6)
        patches = ref["patches"][f]
        np.testing.assert_allclose(
            stats.top_patch_value_Fk[f, : len(patches)].numpy(), [p[0] for p in patches], rtol=1e-6
        )
        got = set(
            zip(
                stats.top_patch_image_Fk[f, : len(patches)].tolist(),
                stats.top_patch_token_Fk[f, : len(patches)].tolist(),
                strict=True,
            )
        )
        assert got == {(p[1], p[2]) for p in patches}
        # the random sample: distinct firing tokens of this feature with their true values
        valid = stats.sample_image_FS[f] >= 0
        assert int(valid.sum()) == min(config.n_samples, int(ref["fire"][f]))
        pairs = list(
            zip(
                stats.sample_image_FS[f][valid].tolist(),
                stats.sample_token_FS[f][valid].tolist(),
                strict=True,
            )
        )
        assert len(set(pairs)) == len(pairs)
        for (image, token), value in zip(pairs, stats.sample_value_FS[f][valid].tolist(), strict=True):
            assert value == pytest.approx(ref["dense"][image * 13 + token, f], rel=1e-6)


def test_sample_holds_every_firing_token_when_it_is_large_enough():
    n_features = 9
    config = StatsConfig(n_samples=400)
    codes = generated_codes(n_features=n_features)
    stats = accumulate(codes, n_features, config, images_per_batch=5)
    ref = brute_force(*codes[:4], n_features, config)
    for f in range(n_features):
        got = sorted(stats.sample_value_FS[f][stats.sample_image_FS[f] >= 0].tolist())
        want = sorted(ref["dense"][ref["dense"][:, f] > 0, f].tolist())
        np.testing.assert_allclose(got, want, rtol=1e-6)
    picks = stats.quantile_examples(0, (0.0, 0.5, 1.0))
    values = sorted(ref["dense"][ref["dense"][:, 0] > 0, 0])
    assert picks[0][3] == pytest.approx(values[0]) and picks[2][3] == pytest.approx(values[-1])
    assert picks[1][3] == pytest.approx(values[round(0.5 * (len(values) - 1))])


def test_save_and_load_round_trip(tmp_path):
    codes = generated_codes()
    stats = accumulate(codes, 9, StatsConfig(k_images=3), images_per_batch=7)
    stats.meta["sae"] = "somewhere"
    loaded = FeatureStats.load(stats.save(tmp_path / "stats"))
    assert (
        loaded.config == stats.config
        and loaded.layout == stats.layout
        and loaded.meta == {"sae": "somewhere"}
    )
    for name in ("fire_count_F", "top_image_map_FkP", "sample_token_FS", "hist_edges"):
        assert torch.equal(getattr(loaded, name), getattr(stats, name))


def test_statistics_saved_before_token_layout_was_recorded_still_load(tmp_path):
    stats = accumulate(generated_codes(), 9, StatsConfig(k_images=3), images_per_batch=7)
    stats.meta["sae_config"] = {"d_in": 8}
    directory = stats.save(tmp_path / "stats")
    info = read_json(directory / "feature_stats.json")
    assert (info["n_prefix_tokens"], info["grid_hw"]) == (1, [3, 4])
    del info["token_layout"], info["width"]
    write_json_atomic(directory / "feature_stats.json", info)
    assert FeatureStats.load(directory).layout == GRID


def test_load_rejects_a_directory_without_statistics_or_with_missing_tensors(tmp_path):
    with pytest.raises(FileNotFoundError, match="feature_stats.json"):
        FeatureStats.load(tmp_path)
    from safetensors.torch import load_file, save_file

    stats = accumulate(generated_codes(), 9, StatsConfig(), images_per_batch=7)
    path = stats.save(tmp_path / "stats") / "feature_stats.safetensors"
    tensors = load_file(str(path))
    del tensors["max_act_F"]
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=r"lacks tensors \['max_act_F'\]"):
        FeatureStats.load(tmp_path / "stats")


def test_images_out_of_order_or_split_across_updates_are_rejected():
    indices_NK, values_NK, image_N, token_N, _ = generated_codes(n_images=3)
    acc = FeatureStatsAccumulator(9, GRID)
    acc.update(indices_NK[:20], values_NK[:20], image_N[:20], token_N[:20])  # image 1 only partly
    with pytest.raises(ValueError, match="image 1 arrives after image 1"):
        acc.update(indices_NK[20:], values_NK[20:], image_N[20:], token_N[20:])


def test_bad_shapes_and_feature_indices_are_named():
    acc = FeatureStatsAccumulator(4, GRID)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 2\)"):
        acc.update(torch.zeros(2, 3, dtype=torch.int32), torch.zeros(2, 2), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="dictionary has 4 features"):
        acc.update(torch.full((1, 1), 7), torch.ones(1, 1), torch.zeros(1), torch.ones(1))
