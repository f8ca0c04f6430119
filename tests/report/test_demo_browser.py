"""`vitsae demo` end to end at a small scale on the shipped ViT, and its browser in headless Chromium."""

from __future__ import annotations

import re

import torch

from vitsae.analysis.stats import FeatureStats
from vitsae.cli import main


def test_demo_writes_a_browser_that_works(tmp_path, capsys, page):
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--out",
            str(out),
            "--n-images",
            "96",
            "--expansion-factor",
            "2",
            "--total-tokens",
            "12288",
            "--batch-size",
            "2048",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for stage in ("harvest", "train", "stats", "browse", "eval"):
        assert f"$ vitsae {stage} " in printed
    index = out / "browser" / "index.html"
    assert f"open {index.resolve()}" in printed
    summary = dict(re.findall(r"^  (FVU \(training\)|L0 \(training\)|dead fraction)\s+(\S+)$", printed, re.M))
    assert 0 <= float(summary["FVU (training)"]) < 1.5 and float(summary["L0 (training)"]) > 0
    assert 0 <= float(summary["dead fraction"]) <= 1
    spliced = dict(re.findall(r"^  (spliced accuracy|spliced KL)\s+(\S+)", printed, re.M))
    assert 0 <= float(spliced["spliced accuracy"]) <= 1 and float(spliced["spliced KL"]) >= 0

    stats = FeatureStats.load(out / "stats")
    assert stats.n_images == 96 and stats.n_features == 2 * 96  # the shipped ViT is 96 wide

    page.goto(index.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#rows tr").count() == min(100, stats.n_features)
    busiest = int(torch.argmax(stats.fire_count_F))
    page.goto((out / "browser" / "feature.html").as_uri() + f"#{busiest}")
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("#title").startswith(f"Feature {busiest}")
    page.wait_for_function(
        "document.querySelectorAll('main canvas').length > 0 && "
        "[...document.querySelectorAll('main canvas')].every(c => c.dataset.drawn === '1')"
    )
    assert "pushes up" in page.inner_text("main")  # the shipped ViT has a classification head
    assert page.locator("#near-decoder li a").count() == 8
    assert page.problems == []

    # the demo gives its first images (all 96 here) an explorer page
    page.goto((out / "browser" / "images.html").as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#rows tr").count() == 96
    page.goto((out / "browser" / "image.html").as_uri() + "#5")
    page.wait_for_selector("body[data-ready='1']")
    box = page.locator("#main-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("document.querySelectorAll('#patch-panel tr[data-feature]').length > 0")
    assert page.problems == []
