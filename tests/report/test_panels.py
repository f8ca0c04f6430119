"""Dissection labels and `vitsae visualize` images on feature pages and in the index, and the files they
refuse."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import HOSTILE_LABEL, random_sae
from vitsae.analysis.stats import FeatureStatsAccumulator, StatsConfig
from vitsae.cli import main
from vitsae.report.browser import BrowserConfig, write_browser
from vitsae.report.panels import read_circuit, read_dissection, read_featureviz
from vitsae.sae.config import SAEConfig
from vitsae.sae.io import save_sae
from vitsae.sae.model import SparseAutoencoder
from vitsae.tokens import TokenLayout

N_FEATURES = 192  # the SAE below: shapes ViT width 96, expansion 2


def stats_of(n_features: int):
    acc = FeatureStatsAccumulator(n_features, TokenLayout(1, 0, (2, 2), 8), StatsConfig(k_images=2))
    gen = torch.Generator().manual_seed(0)
    acc.update(
        torch.randint(0, n_features, (50, 4), generator=gen),
        torch.rand((50, 4), generator=gen) + 0.1,
        torch.arange(10).repeat_interleave(5),
        torch.arange(5).repeat(10),
    )
    return acc.finish()


def dissection_json(folder, units):
    record = {
        "format": "vitsae.dissection",
        "format_version": 1,
        "bases": {"sae": {"quantile": 0.5, "units": units}},
    }
    (folder / "dissection.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def viz_dir(tmp_path_factory):
    """A real `vitsae visualize` run on features 3 and 7 of a random SAE at the shapes ViT's middle block."""
    root = tmp_path_factory.mktemp("viz")
    cfg = SAEConfig(
        d_in=96, expansion_factor=2, architecture="topk", k=4, hook_name="blocks.2.hook_resid_post"
    )
    save_sae(SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(0)), root / "sae")
    args = ["visualize", "--model", "vitsae:shapes-vit", "--sae", str(root / "sae"), "--features", "3,7",
            "--steps", "2", "--samples", "2", "--out", str(root / "out"), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return root / "out"


def test_concepts_and_visualisations_show_on_pages_and_in_the_index(page, tmp_path, viz_dir):
    dissection_json(
        tmp_path,
        [
            {"unit": 3, "concept": "shape:circle", "iou": 0.21, "ci": [0.18, 0.24], "runner_up": "colour:red",
             "runner_up_iou": 0.05},
            {"unit": 5, "concept": HOSTILE_LABEL, "iou": 0.1, "ci": [0.05, 0.12]},
            {"unit": 6, "concept": "shape:square", "iou": 0.0, "ci": [0.0, 0.0]},
        ],
    )  # fmt: skip
    labels = read_dissection(tmp_path, N_FEATURES)
    assert sorted(labels) == [3, 5]  # IoU 0: no label
    site = tmp_path / "site"
    stats = stats_of(N_FEATURES)
    write_browser(
        stats,
        site,
        dissection=labels,
        featureviz=read_featureviz(viz_dir, N_FEATURES),
        config=BrowserConfig(progress=False),
    )
    assert sorted(p.name for p in (site / "viz" / "000").iterdir()) == [
        "3_0.png",
        "3_1.png",
        "7_0.png",
        "7_1.png",
    ]
    page.goto((site / "feature.html").as_uri() + "#3")
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("#title") == "Feature 3 · shape:circle"
    assert "IoU 0.210 [0.180, 0.240]; runner-up colour:red (0.0500)" in page.inner_text("#concept")
    page.wait_for_function("[...document.querySelectorAll('#featureviz img')].every(i => i.complete)")
    widths = page.eval_on_selector_all("#featureviz img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 2 and all(w > 0 for w in widths)
    page.goto((site / "index.html").as_uri())
    page.wait_for_selector("body[data-ready='1']")
    viz = page.eval_on_selector_all("img[alt^='visualisation of feature']", "imgs => imgs.map(i => i.alt)")
    shown = [f for f in (3, 7) if stats.fire_count_F[f] > 0]  # the index hides dead features at first
    assert shown and viz == [f"visualisation of feature {f}" for f in shown]
    page.fill("#search", "circle")
    page.wait_for_function("document.querySelector('#count').textContent.startsWith('1 of')")
    page.fill("#search", "stripes")
    page.wait_for_function("document.querySelector('#rows').textContent.includes('stripes')")
    assert page.locator("#rows tr").count() == 1
    assert HOSTILE_LABEL in page.inner_text("#rows") and page.evaluate("window.__pwned") is None
    assert page.problems == []


def test_bad_featureviz_and_dissection_files_are_named(tmp_path, viz_dir, capsys):
    record = json.loads((viz_dir / "featureviz.json").read_text())
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    record["targets"][0]["images"] = ["../../etc/passwd"]
    (bad / "featureviz.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="expected a file name in images/"):
        read_featureviz(bad, N_FEATURES)
    record["targets"][0]["images"] = ["missing.png"]
    (bad / "featureviz.json").write_text(json.dumps(record))
    with pytest.raises(FileNotFoundError, match="missing.png is missing: rerun `vitsae visualize`"):
        read_featureviz(bad, N_FEATURES)
    (bad / "images" / "missing.png").write_text("<script>not an image</script>")
    with pytest.raises(ValueError, match="is not an image"):
        read_featureviz(bad, N_FEATURES)
    with pytest.raises(ValueError, match="visualises feature 7; the statistics have 5 features"):
        read_featureviz(viz_dir, 5)
    (tmp_path / "dissection.json").write_text(
        json.dumps({"format": "vitsae.dissection", "format_version": 9})
    )
    with pytest.raises(ValueError, match="not vitsae.dissection version 1"):
        read_dissection(tmp_path, N_FEATURES)
    assert read_dissection(tmp_path / "bad", N_FEATURES) is None
    with pytest.raises(FileNotFoundError, match="no featureviz.json"):
        read_featureviz(tmp_path, N_FEATURES)


def test_a_traced_circuit_lists_upstream_and_downstream_features(page, tmp_path):
    """A real `vitsae trace` over two SAEs of the tiny ViT; the browser of the second SAE's features shows
    what feeds each feature (linked when it is a feature of the same SAE) and what it feeds."""
    hooks = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
    args = ["trace", "--model", "module:tests.helpers:tiny_vit", "--source", "shapes:8:0:32",
            "--target", "class:1", "--images", "8", "--batch-size", "4", "--confirm", "2",
            "--out", str(tmp_path / "graph"), "--no-progress"]  # fmt: skip
    for i, hook in enumerate(hooks):
        save_sae(random_sae(32, hook, seed=i), tmp_path / f"sae{i}")
        args += ["--sae", str(tmp_path / f"sae{i}")]
    assert main(args) == 0
    n_features = 128  # random_sae: 4 x width 32
    circuit = read_circuit(tmp_path / "graph", hooks[1], n_features)
    assert circuit["hook"] == hooks[1] and circuit["target"]
    feature = next(f for f, entry in circuit["features"].items() if entry["upstream"])
    upstream = circuit["features"][feature]["upstream"]
    site = tmp_path / "site"
    write_browser(stats_of(n_features), site, circuit=circuit, config=BrowserConfig(progress=False))
    page.goto((site / "feature.html").as_uri() + f"#{feature}")
    page.wait_for_selector("body[data-ready='1']")
    text = page.inner_text("#circuit-upstream")
    kind, hook, source, _, _ = upstream[0]
    assert (f"{hook} feature {source}" if kind == "feature" else f"error node of {hook}") in text
    assert text.count("attribution") == len(upstream)
    assert page.locator("#circuit-downstream li").count() >= 1
    assert page.problems == []
    with pytest.raises(ValueError, match=r"traces the SAEs at \['blocks.0.hook_resid_post', 'blocks.1"):
        read_circuit(tmp_path / "graph", "blocks.2.hook_resid_post", n_features)
    with pytest.raises(ValueError, match="lists feature .*; the statistics have 5 features"):
        read_circuit(tmp_path / "graph", hooks[1], 5)
    record = json.loads((tmp_path / "graph" / "features.json").read_text())
    del record["target"]
    (tmp_path / "graph" / "features.json").write_text(json.dumps(record))
    with pytest.raises(
        ValueError, match=r"features.json is damaged \(KeyError: 'target'\): rerun `vitsae trace`"
    ):
        read_circuit(tmp_path / "graph", hooks[1], n_features)


def test_a_dissected_feature_outlines_its_concept_mask_on_its_top_images(page, tmp_path):
    """With an image source that has concept masks, each top image of a labelled feature carries its
    concept's mask (bits at MASK_SIZE², nearest-resized from the source's own mask) and the page draws it."""
    from vitsae.data.shapes import ShapesDataset
    from vitsae.report.browser import MASK_SIZE

    source = ShapesDataset(n_images=10, image_size=32)
    stats = stats_of(N_FEATURES)
    feature = int(stats.fire_count_F.argmax())
    top_image = int(stats.top_image_index_Fk[feature, 0])
    concept = next(name for name in source.masks(top_image) if name.startswith("shape:"))
    dissection_json(tmp_path, [{"unit": feature, "concept": concept, "iou": 0.3, "ci": [0.2, 0.4]}])
    site = tmp_path / "site"
    write_browser(
        stats,
        site,
        source=source,
        dissection=read_dissection(tmp_path, N_FEATURES),
        config=BrowserConfig(progress=False, thumb_size=64),
    )
    script = (site / "data" / "f" / "000" / f"{feature}.js").read_text()
    data = json.loads(script[script.index("(") + 1 : script.rindex(")")])
    first = data["top_images"][0]
    assert first[0] == top_image
    bits = np.unpackbits(np.frombuffer(base64.b64decode(first[5]), dtype=np.uint8))[: MASK_SIZE**2]
    mask = source.masks(top_image)[concept]
    expected = Image.fromarray(mask.astype(np.uint8) * 255).resize((MASK_SIZE, MASK_SIZE), Image.NEAREST)
    assert bits.reshape(MASK_SIZE, MASK_SIZE).astype(bool).tolist() == (np.asarray(expected) > 127).tolist()
    assert bits.any()
    page.goto((site / "feature.html").as_uri() + f"#{feature}")
    page.wait_for_selector("body[data-ready='1']")
    assert concept in page.inner_text("#mask-legend")
    page.wait_for_selector("#top-images canvas[data-outline='1']")
    assert page.problems == []
