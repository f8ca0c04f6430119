"""Fixtures for report tests: statistics of a real small store, a browser written from them, Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import (
    HOSTILE_LABEL,
    harvest_small_store,
    launched_chromium,
    recording_problems,
    shapes,
    tiny_sae,
    tiny_vit,
)
from vitsae.analysis.compute import compute_feature_stats
from vitsae.analysis.images import ImageData, compute_image_data
from vitsae.analysis.logits import logit_effects, unembedding
from vitsae.analysis.neighbours import compute_neighbours
from vitsae.analysis.stats import FeatureStats, StatsConfig
from vitsae.report.browser import BrowserConfig, write_browser
from vitsae.store.reader import ActivationStore


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> ActivationStore:
    return harvest_small_store(tmp_path_factory.mktemp("harvest"))


@pytest.fixture(scope="session")
def small_stats(small_store: ActivationStore) -> FeatureStats:
    return compute_feature_stats(small_store, tiny_sae(), StatsConfig(k_images=6, k_patches=6, n_samples=32))


@pytest.fixture(scope="session")
def small_images(small_store: ActivationStore) -> ImageData:
    """Image explorer data for 8 of the small store's 14 images."""
    return compute_image_data(small_store, tiny_sae(), list(range(8)), top_codes=4, embed_dims=8, n_similar=3)


@pytest.fixture(scope="session")
def small_site(
    tmp_path_factory: pytest.TempPathFactory, small_stats: FeatureStats, small_images: ImageData
) -> Path:
    """A browser of every feature, with pictures, class names, logit effects, two feature labels, nearest
    features and explorer pages for 8 images."""
    model = tiny_vit()
    site = tmp_path_factory.mktemp("site") / "browser"
    live = [f for f in range(small_stats.n_features) if small_stats.fire_count_F[f] > 0]
    write_browser(
        small_stats,
        site,
        source=shapes(),
        preprocess=model.preprocess,
        class_names=shapes().class_names,
        logits=logit_effects(tiny_sae().W_dec, unembedding(model)),
        feature_labels={live[0]: HOSTILE_LABEL, live[1]: "red circle"},
        config=BrowserConfig(
            title="tiny <ViT> & co", n_images=6, n_patches=4, thumb_size=96, patch_size=48, progress=False
        ),
        neighbours=compute_neighbours(small_stats, tiny_sae().W_dec, 4),
        image_data=small_images,
    )
    return site


@pytest.fixture(scope="session")
def chromium():
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium):
    """A fresh page that records console messages and page errors in `page.problems`."""
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    yield recording_problems(context.new_page())
    context.close()
