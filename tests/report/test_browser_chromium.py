"""The browser in headless Chromium from file://: index, sorting, search, feature pages, 50k features."""

from __future__ import annotations

import io
import time

import numpy as np
import torch
from PIL import Image

from tests.helpers import HOSTILE_LABEL
from vitsae.analysis.stats import FeatureStatsAccumulator, StatsConfig
from vitsae.report.browser import BrowserConfig, write_browser
from vitsae.tokens import TokenLayout


def open_index(page, site):
    page.goto((site / "index.html").as_uri())
    page.wait_for_selector("body[data-ready='1']")


def visible_ids(page) -> list[int]:
    return [
        int(x)
        for x in page.eval_on_selector_all("#rows tr td:first-child a", "as => as.map(a => a.textContent)")
    ]


def expected_order(values: torch.Tensor, descending: bool = True) -> list[int]:
    """Feature ids sorted by value, ties by id (the index's order)."""
    pairs = sorted(range(len(values)), key=lambda f: (-values[f] if descending else values[f], f))
    return pairs


def test_index_loads_sorts_and_searches(page, small_site, small_stats):
    open_index(page, small_site)
    n_features = small_stats.n_features
    assert page.title() == "tiny <ViT> & co"
    freq = [float(f"{x:.4g}") for x in small_stats.frequency_F().tolist()]
    assert visible_ids(page) == expected_order(torch.tensor(freq))[:100]

    page.click("th[data-key='max']")
    peak = torch.tensor([float(f"{x:.4g}") for x in small_stats.max_activation_F().tolist()])
    assert visible_ids(page) == expected_order(peak)[:100]
    page.click("th[data-key='max']")
    assert visible_ids(page) == expected_order(peak, descending=False)[:100]
    page.click("th[data-key='id']")
    assert visible_ids(page) == list(range(min(100, n_features)))

    page.fill("#search", "7")
    page.wait_for_function(
        "document.querySelector('#count').textContent.indexOf(' of ') > 0 && "
        "[...document.querySelectorAll('#rows tr td:first-child a')]"
        ".every(a => a.textContent.startsWith('7'))"
    )
    assert visible_ids(page)[0] == 7 and all(str(f).startswith("7") for f in visible_ids(page))

    page.fill("#search", "circle")
    page.wait_for_function("document.querySelector('#count').textContent.startsWith('1 of')")
    assert page.inner_text("#rows td.label") == "red circle"
    page.fill("#search", 'stripes & "dots"')
    page.wait_for_function("document.querySelector('#rows td.label').textContent.includes('stripes')")
    assert page.locator("#rows tr").count() == 1
    assert page.inner_text("#rows td.label") == HOSTILE_LABEL
    assert page.evaluate("window.__pwned") is None

    page.fill("#search", "")
    page.wait_for_function("document.querySelectorAll('#rows tr').length === 96")
    page.click("th[data-key='label']")
    first_rows = page.eval_on_selector_all(
        "#rows td.label", "tds => tds.slice(0, 3).map(td => td.textContent)"
    )
    assert first_rows == sorted([HOSTILE_LABEL, "red circle"]) + [""]  # labelled rows first, A-Z
    page.check("#hide-dead")
    live = int((small_stats.fire_count_F > 0).sum())
    page.wait_for_function(f"document.querySelector('#count').textContent.startsWith('{live} of')")
    assert page.inner_text("#count") == f"{live} of {n_features} features"
    assert page.problems == []


def drawn_figures(page, grid: str) -> int:
    return page.eval_on_selector_all(
        f"#{grid} canvas", "cs => cs.filter(c => c.dataset.drawn === '1').length"
    )


def test_feature_page_shows_its_pictures(page, small_site, small_stats):
    f = int(torch.argmax(small_stats.fire_count_F))
    page.goto((small_site / "feature.html").as_uri() + f"#{f}")
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("#title").startswith(f"Feature {f}")
    n_top = min(6, int((small_stats.top_image_index_Fk[f] >= 0).sum()))
    n_patches = min(4, int((small_stats.top_patch_image_Fk[f] >= 0).sum()))
    page.wait_for_function(
        "[...document.querySelectorAll('main canvas')].every(c => c.dataset.drawn === '1')"
    )
    assert (drawn_figures(page, "top-images"), drawn_figures(page, "top-patches")) == (n_top, n_patches)
    assert drawn_figures(page, "quantiles") == 5
    # every picture links to its image's page; the tiny ViT has one CLS token before its 4x4 patches
    hrefs = page.eval_on_selector_all("#top-images a", "as => as.map(a => a.getAttribute('href'))")
    assert hrefs == [f"image.html#{int(i)}" for i in small_stats.top_image_index_Fk[f, :n_top]]
    captions = page.inner_text("#quantiles")
    assert all(("CLS" in line) or ("(" in line) for line in captions.splitlines() if line.startswith("q"))
    assert "token 0" not in captions
    assert page.locator("svg rect").count() > 0
    assert "pushes up" in page.inner_text("main")
    near = page.eval_on_selector_all("#near-decoder a", "as => as.map(a => a.getAttribute('href'))")
    assert len(near) == 4 and all(h.startswith("#") for h in near)
    assert page.problems == []

    page.click("#next-feature")
    page.wait_for_function(f"document.querySelector('#title').textContent.startsWith('Feature {f + 1}')")
    assert page.problems == []


def test_heatmaps_are_drawn_from_the_numbers(page, small_site, small_stats):
    """The top image's heatmap is bright where its map is largest and dimmed where it is 0."""
    f = int(torch.argmax(small_stats.fire_count_F))
    page.goto((small_site / "feature.html").as_uri() + f"#{f}")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function(
        "(document.querySelector('#top-images canvas') || {dataset: {}}).dataset.drawn === '1'"
    )
    shot = page.locator("#top-images canvas").first.screenshot()
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=float).sum(2)
    map_hw = small_stats.image_map(f, 0).numpy()
    grid = map_hw.shape[0]
    cell = pixels.shape[0] // grid
    hot, cold = (
        np.unravel_index(map_hw.argmax(), map_hw.shape),
        np.unravel_index(map_hw.argmin(), map_hw.shape),
    )
    centre = lambda rc: pixels[rc[0] * cell + cell // 2, rc[1] * cell + cell // 2]  # noqa: E731
    assert map_hw.max() > map_hw.min() and centre(hot) > centre(cold)


def test_a_dead_feature_gets_a_light_page(page, small_site, small_stats):
    dead = int(torch.nonzero(small_stats.fire_count_F == 0)[0])
    page.goto((small_site / "feature.html").as_uri() + f"#{dead}")
    page.wait_for_selector("body[data-ready='1']")
    assert "never fired" in page.inner_text("main")
    assert page.locator("main canvas").count() == 0 and page.problems == []


def test_fifty_thousand_features_load_and_search(page, tmp_path):
    n_features, n_images, n_tokens, k = 50_000, 300, 5, 16
    gen = torch.Generator().manual_seed(0)
    acc = FeatureStatsAccumulator(
        n_features,
        TokenLayout(1, 0, (2, 2), 8),
        StatsConfig(k_images=2, k_patches=2, n_samples=2, hist_bins=8),
    )
    n_rows = n_images * n_tokens
    acc.update(
        torch.randint(0, n_features, (n_rows, k), generator=gen),
        torch.rand((n_rows, k), generator=gen),
        torch.arange(n_images).repeat_interleave(n_tokens),
        torch.arange(n_tokens).repeat(n_images),
    )
    stats = acc.finish()
    site = tmp_path / "big"
    write_browser(stats, site, features=[0, 49_999], config=BrowserConfig(progress=False))

    start = time.perf_counter()
    open_index(page, site)
    loaded = time.perf_counter() - start
    assert page.locator("#rows tr").count() == 100  # one page of rows, never all 50,000
    assert page.inner_text("#count") == f"{n_features} of {n_features} features"
    start = time.perf_counter()
    page.fill("#search", "49999")
    page.wait_for_function("document.querySelectorAll('#rows tr').length === 1")
    searched = time.perf_counter() - start
    assert visible_ids(page) == [49_999]
    page.fill("#search", "")
    page.click("th[data-key='max']")
    page.wait_for_function("document.querySelectorAll('#rows tr').length === 100")
    top = visible_ids(page)[0]
    assert top == int(
        torch.argmax(torch.tensor([float(f"{x:.4g}") for x in stats.max_activation_F().tolist()]))
    )
    print(f"50k-feature index: loaded in {loaded:.2f} s, searched in {searched:.2f} s")
    assert page.problems == []

    page.goto((site / "feature.html").as_uri() + "#7")  # written without a page for feature 7
    page.wait_for_selector("body[data-ready='1']")
    assert "There is no page for feature 7" in page.inner_text("main")
    assert len(page.problems) == 1 and "ERR_FILE_NOT_FOUND" in page.problems[0]


def test_a_cls_only_store_shows_its_top_images_and_names_its_tokens(page, tmp_path):
    """No patch grid: the top images are shown without a heatmap, tokens are called CLS and register N."""
    from tests.helpers import shapes

    layout = TokenLayout(n_cls=1, n_registers=2, grid_hw=None, width=8)
    n_images, n_tokens = 14, 3
    acc = FeatureStatsAccumulator(4, layout, StatsConfig(k_images=6, n_samples=64))
    values = torch.linspace(0.1, 3.0, n_images * n_tokens)[:, None]
    acc.update(
        torch.zeros_like(values, dtype=torch.int64),
        values,
        torch.arange(n_images).repeat_interleave(n_tokens),
        torch.arange(n_tokens).repeat(n_images),
    )
    site = tmp_path / "cls"
    write_browser(acc.finish(), site, source=shapes(), config=BrowserConfig(progress=False, thumb_size=64))
    page.goto((site / "feature.html").as_uri() + "#0")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function(
        "[...document.querySelectorAll('main canvas')].every(c => c.dataset.drawn === '1')"
    )
    text = page.inner_text("main")
    assert "No images were rendered" not in text and "no heatmap" in text
    assert drawn_figures(page, "top-images") == 6
    assert page.inner_text("#top-images figcaption").startswith("#1 · 3.00")
    names = {
        line.split(" · ")[2] for line in page.inner_text("#quantiles").splitlines() if line.startswith("q")
    }
    assert names <= {"CLS", "register 1", "register 2"} and names and "token 0" not in text
    assert page.problems == []
