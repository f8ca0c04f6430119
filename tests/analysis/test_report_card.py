"""The SAE report card: Moran's I against hand-computed grids, AUC against scikit-learn, probes, health."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitsae.analysis.report_card import (
    CardCollector,
    ReportCardConfig,
    auc,
    dictionary_health,
    fit_logistic,
    format_card,
    image_task_labels,
    morans_i,
    probe_auc,
    probe_tasks,
    random_sae_like,
    sparse_probing,
)
from vitsae.errors import VitsaeError
from vitsae.sae.config import SAEConfig
from vitsae.sae.model import SparseAutoencoder


def _checkerboard(n: int) -> torch.Tensor:
    return ((torch.arange(n)[:, None] + torch.arange(n)[None, :]) % 2).double()[None]


def test_morans_i_of_a_checkerboard() -> None:
    """Rook (4-connected) neighbours always differ: I = -1 exactly. With the diagonals (8-connected), which
    always agree: sum w z z = (-4n(n-1) + 4(n-1)^2) / 4 and W = 4n(n-1) + 4(n-1)^2, so I = -1 / (2n - 1)."""
    for n in (4, 8):
        assert morans_i(_checkerboard(n), 4).item() == pytest.approx(-1.0)
        assert morans_i(_checkerboard(n), 8).item() == pytest.approx(-1.0 / (2 * n - 1))


def test_morans_i_of_a_half_plane() -> None:
    """8x8, top half 1: z = +-1/2, sum z^2 = 16. 4-connected: 224 ordered pairs, 16 of them across the edge,
    so sum w z z = (208 - 16) / 4 = 48 and I = 64/224 * 48/16 = 6/7. 8-connected adds 196 diagonal pairs,
    28 across: sum = 48 + (168 - 28) / 4 = 83 over W = 420, I = 64/420 * 83/16 = 83/105."""
    half = torch.zeros(1, 8, 8, dtype=torch.float64)
    half[0, :4] = 1
    assert morans_i(half, 4).item() == pytest.approx(6 / 7)
    assert morans_i(half, 8).item() == pytest.approx(83 / 105)
    assert torch.isnan(morans_i(torch.ones(1, 3, 3), 8)).all()  # a constant map has no I


def test_morans_i_of_noise_is_near_its_expectation() -> None:
    """Under no spatial structure E[I] = -1/(N-1); the mean over many random maps sits close to it."""
    maps = torch.rand(4000, 8, 8, generator=torch.Generator().manual_seed(0))
    assert morans_i(maps, 8).mean().item() == pytest.approx(-1 / 63, abs=0.005)


def test_auc_matches_scikit_learn_with_ties() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    scores = np.round(rng.normal(size=200) + labels, 1)  # rounded: many ties
    assert auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores))


def test_sparse_probing_finds_the_planted_feature() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random((400, 2)) < 0.5
    features = rng.normal(size=(400, 30))
    features[:, 7] += 3 * labels[:, 0]  # feature 7 carries concept 0; concept 1 is carried by nothing
    result = sparse_probing(features, labels, (1, 5), 0.05)
    assert result["0"]["1"] > 0.9 and abs(result["1"]["1"] - 0.5) < 0.15
    assert probe_auc(features[:200], labels[:200, 0], features[200:], labels[200:, 0]) > 0.9
    rare = np.zeros((400, 1), dtype=bool)
    rare[:5] = True
    assert sparse_probing(features, rare, (1,), 0.05) == {}  # present in 1% of images: not probed


def test_dictionary_health_counts_dead_dense_and_duplicates() -> None:
    sae = SparseAutoencoder(SAEConfig(d_in=4, expansion_factor=2, architecture="topk", k=2))
    with torch.no_grad():
        sae.W_dec.copy_(torch.eye(8, 4) + torch.eye(8, 4).roll(4, 0))  # rows 0-3 = rows 4-7
    health = dictionary_health(sae, torch.tensor([0, 0, 5, 50, 1, 1, 1, 1]), 100, ReportCardConfig())
    assert health == {"dead": 2, "dense": 1, "duplicates": 8}
    random = random_sae_like(sae, 0)
    assert torch.equal(random.b_dec, sae.b_dec) and not torch.equal(random.W_dec, sae.W_dec)


def test_collector_scores_only_maps_firing_on_5_to_90_percent() -> None:
    collector = CardCollector({"sae": 3}, (4, 4), ReportCardConfig(probe_images=10))
    half = torch.zeros(4, 4)
    half[:2] = 1.0
    everywhere = torch.ones(4, 4)
    single = torch.zeros(4, 4)
    single[0, 0] = 1.0  # 1 of 16 patches = 6%: scored
    maps = torch.stack([half, everywhere, single]).reshape(3, 16)
    collector("sae", 0, torch.tensor([0, 1, 2]), maps)
    assert collector.moran_count["sae"].tolist() == [1, 0, 1]
    assert collector.fire_count["sae"].tolist() == [8, 16, 1]
    assert collector.pooled["sae"][0].tolist() == [1.0, 1.0, 1.0]
    assert collector.coherence("sae")["features_scored"] == 2


def test_bad_card_options_are_one_line_errors() -> None:
    with pytest.raises(VitsaeError, match="connectivity must be 4 or 8"):
        ReportCardConfig(connectivity=6)
    with pytest.raises(VitsaeError, match="coherence_min < coherence_max"):
        ReportCardConfig(coherence_min=0.9, coherence_max=0.5)


def test_format_card_prints_trained_and_random_side_by_side() -> None:
    entry = {
        "spatial_coherence": {"mean_morans_i": 0.5},
        "probing_auc": {"1": 0.8},
        "coverage": {"concepts_at_iou": {"0.2": 3}, "units_at_iou": {"0.2": 9}},
        "health": {"dead": 1, "dense": 2, "duplicates": 0},
    }
    card = {
        "saes": {"x8": {"trained": entry, "random": entry}},
        "tasks_probed": ["a"],
        "raw_probe_auc": 0.7,
    }
    text = format_card(card, (0.2,))
    assert "0.500/0.500" in text and "3/3" in text and "0.700" in text


def test_logistic_fit_matches_scikit_learn() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 4)) * [1.0, 3.0, 0.5, 2.0] + 1.0
    y = (x @ [1.0, -0.5, 2.0, 0.0] + rng.normal(size=300)) > 1.0
    l2 = 1e-2
    mean, weights = fit_logistic(x, y, l2=l2)
    std = x.std(0)
    # the same objective in sklearn's form: C = 1 / (2 * n * l2) on standardised columns
    reference = linear_model.LogisticRegression(C=1 / (2 * len(y) * l2), tol=1e-10, max_iter=1000)
    reference.fit((x - mean) / std, y)
    assert np.allclose(weights[:-1] * std, reference.coef_[0], atol=1e-4)
    assert weights[-1] == pytest.approx(reference.intercept_[0], abs=1e-4)


def test_probe_tasks_add_large_object_attributes_on_shapes() -> None:
    from vitsae.data.shapes import CONCEPTS, ShapesDataset

    tasks = probe_tasks(list(CONCEPTS))
    assert len(tasks) == 25 + 16 and ("large:shape:star", "shape:star") in tasks
    sample = ShapesDataset(n_images=3).sample(0)
    labels = image_task_labels(sample.masks, tasks)
    (main,) = [obj for obj in sample.objects if obj.size == "large"]
    names = [name for name, _ in tasks]
    assert (
        labels[names.index(f"large:shape:{main.shape}")]
        and labels[names.index(f"large:colour:{main.colour}")]
    )
    assert (
        sum(
            labels[names.index(f"large:shape:{s}")]
            for s in ("circle", "square", "triangle", "cross", "star", "ring")
        )
        == 1
    )
    assert probe_tasks(["sky", "tree"]) == [("sky", None), ("tree", None)]
