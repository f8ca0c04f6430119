"""Feature statistics from a real harvested store against a brute-force pass over its dense codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import HOOK, N_IMAGES, shapes, tiny_sae, tiny_vit
from vitsae.analysis.compute import compute_feature_stats, compute_feature_stats_from_images
from vitsae.analysis.stats import StatsConfig

CONFIG = StatsConfig(k_images=4, k_patches=5, n_samples=1000, hist_bins=12, hist_min=0.01, hist_max=100.0)


def dense_reference(store, sae):
    rows = np.arange(len(store))
    acts = store[rows]
    image, token = store.provenance(rows)
    with torch.no_grad():
        codes = sae.encode(acts).numpy()
    return codes, image, token.astype(np.int64)


@pytest.mark.parametrize(("batch_rows", "merge_rows"), [(7, 1), (40, 100), (10_000, 65536)])
def test_store_statistics_equal_brute_force_over_dense_codes(small_store, batch_rows, merge_rows):
    sae = tiny_sae()
    stats = compute_feature_stats(small_store, sae, CONFIG, batch_rows=batch_rows, merge_rows=merge_rows)
    codes, image, token = dense_reference(small_store, sae)
    n_features = sae.cfg.d_sae
    is_patch = token >= 1

    assert stats.n_tokens == len(small_store) == N_IMAGES * 17 and stats.n_images == N_IMAGES
    assert stats.layout.n_prefix == 1 and stats.layout.grid_hw == (4, 4)
    assert stats.fire_count_F.tolist() == (codes > 0).sum(0).tolist()
    np.testing.assert_allclose(stats.act_sum_F.numpy(), codes.sum(0), rtol=1e-5)
    np.testing.assert_allclose(stats.max_activation_F().numpy(), codes.max(0), rtol=1e-5)
    assert stats.hist_FH.sum(1).tolist() == (codes > 0).sum(0).tolist()
    assert stats.meta["hook"] == HOOK and stats.meta["source"]["kind"] == "shapes"
    for f in range(n_features):
        per_image = np.zeros(N_IMAGES)
        np.maximum.at(per_image, image[is_patch], codes[is_patch, f])
        assert stats.image_fire_count_F[f] == len(np.unique(image[codes[:, f] > 0]))
        n_fired = int((per_image > 0).sum())
        k = min(CONFIG.k_images, n_fired)
        want = np.sort(per_image)[::-1][:k]
        np.testing.assert_allclose(stats.top_image_score_Fk[f, :k].numpy(), want, rtol=1e-5)
        for rank in range(k):
            i = int(stats.top_image_index_Fk[f, rank])
            assert per_image[i] == pytest.approx(float(stats.top_image_score_Fk[f, rank]), rel=1e-5)
            want_map = codes[(image == i) & is_patch, f].reshape(4, 4)
            got_map = stats.image_map(f, rank).numpy()
            np.testing.assert_allclose(got_map, want_map, atol=per_image[i] / 510 + 1e-6)
        patch_values = np.sort(codes[is_patch, f][codes[is_patch, f] > 0])[::-1][: CONFIG.k_patches]
        got = stats.top_patch_value_Fk[f, : len(patch_values)].numpy()
        np.testing.assert_allclose(got, patch_values, rtol=1e-5)
        for rank in range(len(patch_values)):
            row = small_store.row_of(
                int(stats.top_patch_image_Fk[f, rank]), int(stats.top_patch_token_Fk[f, rank])
            )
            assert codes[row, f] == pytest.approx(float(stats.top_patch_value_Fk[f, rank]), rel=1e-5)
        # n_samples exceeds every firing count here, so the sample is every firing token
        sample = np.sort(stats.sample_value_FS[f][stats.sample_image_FS[f] >= 0].numpy())
        np.testing.assert_allclose(sample, np.sort(codes[codes[:, f] > 0, f]), rtol=1e-5)


def test_labels_are_kept_with_the_top_images(small_store):
    labels = [shapes()[i].label for i in range(N_IMAGES)]
    stats = compute_feature_stats(small_store, tiny_sae(), CONFIG, labels=labels)
    top = stats.top_image_index_Fk
    assert (top >= 0).any()
    expected = torch.where(top >= 0, torch.tensor(labels)[top.clamp(min=0)], -1)
    assert torch.equal(stats.top_image_label_Fk, expected)
    with pytest.raises(ValueError, match=r"labels has shape \(3,\); the store covers 14 images"):
        compute_feature_stats(small_store, tiny_sae(), CONFIG, labels=[0, 1, 2])


def test_images_through_the_model_give_the_store_statistics(small_store):
    sae = tiny_sae()
    from_store = compute_feature_stats(small_store, sae, CONFIG)
    from_images = compute_feature_stats_from_images(tiny_vit(), HOOK, sae, shapes(), CONFIG, batch_size=5)
    assert torch.equal(from_images.fire_count_F, from_store.fire_count_F)
    assert torch.equal(from_images.top_image_index_Fk, from_store.top_image_index_Fk)
    assert torch.allclose(from_images.top_image_score_Fk, from_store.top_image_score_Fk, atol=1e-5)
    assert (from_images.top_image_label_Fk[from_images.top_image_index_Fk >= 0] >= 0).all()


def test_an_sae_for_another_width_or_hook_is_refused(small_store):
    from vitsae.sae.config import SAEConfig
    from vitsae.sae.model import SparseAutoencoder

    with pytest.raises(ValueError, match="d_in=16.*has 32"):
        compute_feature_stats(small_store, SparseAutoencoder(SAEConfig(d_in=16)), CONFIG)
    other = SparseAutoencoder(SAEConfig(d_in=32, hook_name="blocks.0.hook_resid_post"))
    with pytest.raises(ValueError, match="trained on hook 'blocks.0.hook_resid_post'"):
        compute_feature_stats(small_store, other, CONFIG)


def test_cnn_features_map_onto_the_spatial_grid(tmp_path):
    """A ResNet stage's (C, H, W) map read as H*W tokens: every token is a patch, maps are H x W."""
    from transformers import ResNetConfig, ResNetModel

    from vitsae.data.preprocess import Preprocess
    from vitsae.models import load
    from vitsae.sae.config import SAEConfig
    from vitsae.sae.model import SparseAutoencoder

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ResNetModel(config).save_pretrained(tmp_path / "resnet")
    with pytest.warns(UserWarning, match="no preprocessing"):
        model = load(f"hf:{tmp_path / 'resnet'}")
    model.preprocess = Preprocess(size=(32, 32))
    hook = "encoder.stages.1"
    sae = SparseAutoencoder(
        SAEConfig(d_in=16, expansion_factor=2, architecture="relu"), torch.Generator().manual_seed(3)
    )
    source = shapes()
    stats = compute_feature_stats_from_images(model, hook, sae, source, CONFIG, batch_size=6)
    assert stats.layout.n_prefix == 0 and stats.layout.grid_hw == (4, 4)

    pixels = torch.stack([model.preprocess(source[i].image) for i in range(N_IMAGES)])
    with torch.no_grad():
        codes = sae.encode(model.collect(pixels, [hook])[hook].reshape(-1, 16)).reshape(N_IMAGES, 16, -1)
    per_image = codes.amax(1)  # [images, F]
    assert stats.fire_count_F.tolist() == (codes > 0).sum((0, 1)).tolist()
    for f in range(sae.cfg.d_sae):
        k = min(CONFIG.k_images, int((per_image[:, f] > 0).sum()))
        torch.testing.assert_close(
            stats.top_image_score_Fk[f, :k], per_image[:, f].sort(descending=True).values[:k]
        )
        for rank in range(k):
            image = int(stats.top_image_index_Fk[f, rank])
            want = codes[image, :, f].reshape(4, 4)
            torch.testing.assert_close(
                stats.image_map(f, rank), want, atol=float(want.max()) / 510 + 1e-6, rtol=0
            )
