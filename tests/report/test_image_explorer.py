"""The image explorer in headless Chromium: hovering a patch lists its features and moves the similarity
overlay across the strip; features overlay on click; the image index sorts; missing images are named."""

from __future__ import annotations

import json

import torch

from tests.helpers import HOSTILE_LABEL
from vitsae.analysis.images import ImageData
from vitsae.report.browser import BrowserConfig, bucket, write_browser


def open_image(page, site, image: int) -> None:
    page.goto((site / "image.html").as_uri() + f"#{image}")
    page.wait_for_selector("body[data-ready='1']")


def hover_patch(page, row: int, col: int, grid: int = 4) -> None:
    page.locator("#main-canvas").scroll_into_view_if_needed()
    box = page.locator("#main-canvas").bounding_box()
    cell = box["width"] / grid
    page.mouse.move(box["x"] + (col + 0.5) * cell, box["y"] + (row + 0.5) * cell)


def listed_features(page) -> list[int]:
    return [
        int(f)
        for f in page.eval_on_selector_all(
            "#patch-panel tr[data-feature]", "rs => rs.map(r => r.dataset.feature)"
        )
    ]


def expected_features(images: ImageData, position: int, token: int) -> list[int]:
    row = images.token_T.tolist().index(token)
    return [int(f) for f in images.code_index_ITc[position, row] if f >= 0]


def test_hovering_a_patch_lists_its_features_and_moves_the_similarity_overlay(page, small_site, small_images):
    image = int(small_images.image_I[0])
    open_image(page, small_site, image)
    page.wait_for_function("document.querySelector('#strip').dataset.loaded === '3'")
    strip = page.locator("#strip canvas").first
    assert "Hover a patch" in page.inner_text("#patch-panel")
    still = strip.screenshot()

    hover_patch(page, 0, 0)
    page.wait_for_function("document.querySelector('#patch-name') !== null")
    assert page.inner_text("#patch-name") == "At (0, 0)"
    assert listed_features(page) == expected_features(small_images, 0, 1)  # token 1 is patch (0, 0)
    assert "reconstruction error there" in page.inner_text("#patch-error")
    assert page.get_attribute("#main-canvas", "data-overlay") == "raw:1"
    first = strip.screenshot()
    assert first != still

    hover_patch(page, 3, 2)
    page.wait_for_function("document.querySelector('#patch-name').textContent === 'At (3, 2)'")
    assert listed_features(page) == expected_features(small_images, 0, 1 + 3 * 4 + 2)
    assert strip.get_attribute("data-overlay") == f"raw:{1 + 3 * 4 + 2}"
    assert strip.screenshot() != first

    page.check("input[value='codes']")  # the mouse leaves the image: the patch stays listed, no overlay
    assert (
        page.inner_text("#patch-name") == "At (3, 2)" and strip.get_attribute("data-overlay") == "features:0"
    )
    hover_patch(page, 3, 2)
    assert strip.get_attribute("data-overlay") == f"codes:{1 + 3 * 4 + 2}"
    page.hover("button[data-token='0']")  # the class token has a button of its own
    assert page.inner_text("#patch-name") == "At CLS"
    assert page.problems == []


def test_clicking_features_overlays_them_in_colours(page, small_site, small_images):
    open_image(page, small_site, int(small_images.image_I[1]))
    rows = page.locator("#main-features tr[data-feature]")
    assert rows.count() >= 2
    rows.nth(0).locator("td").nth(1).click()
    rows.nth(1).locator("td").nth(1).click()
    assert page.get_attribute("#main-canvas", "data-overlay") == "features:2"
    colours = page.eval_on_selector_all(
        "#main-features tr.overlaid .swatch", "ss => ss.map(s => getComputedStyle(s).backgroundColor)"
    )
    assert len(colours) == 2 and colours[0] != colours[1]
    rows.nth(0).locator("td").nth(1).click()
    assert page.get_attribute("#main-canvas", "data-overlay") == "features:1"
    assert page.problems == []


def test_the_image_index_sorts_by_reconstruction_and_links_each_image(page, small_site, small_images):
    page.goto((small_site / "images.html").as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#rows tr").count() == len(small_images.image_I)
    page.click("th[data-key='recon']")
    ids = [
        int(x)
        for x in page.eval_on_selector_all("#rows tr td:nth-child(2) a", "as => as.map(a => a.textContent)")
    ]
    recon = dict(zip(small_images.image_I.tolist(), small_images.recon_I.tolist(), strict=True))
    assert ids == sorted(recon, key=lambda i: (-float(f"{recon[i]:.4g}"), i))
    assert page.problems == []


def test_an_image_without_explorer_data_is_named(page, small_site):
    open_image(page, small_site, 12)
    assert "Image 12 has no explorer data" in page.inner_text("main")
    assert page.problems == []


def test_image_pages_are_small(small_site, small_images):
    for image in small_images.image_I.tolist():
        path = small_site / "data" / "i" / bucket(image) / f"{image}.js"
        text = path.read_text()
        assert text.startswith("vitsaeImage(") and path.stat().st_size < 8_000
        data = json.loads(text[len("vitsaeImage(") :].rstrip().rstrip(";").rstrip(")"))
        assert data["id"] == image and len(data["similar"]) == 3 and image not in data["similar"]


def test_a_hostile_feature_label_shows_as_text_on_the_image_page(page, tmp_path, small_stats, small_images):
    feature = int(small_images.code_index_ITc[0, 1, 0])  # the strongest feature at patch (0, 0)
    site = tmp_path / "site"
    write_browser(
        small_stats,
        site,
        image_data=small_images,
        feature_labels={feature: HOSTILE_LABEL},
        config=BrowserConfig(progress=False),
    )
    open_image(page, site, int(small_images.image_I[0]))
    hover_patch(page, 0, 0)
    assert HOSTILE_LABEL in page.inner_text("#patch-panel")
    assert page.evaluate("window.__pwned") is None and page.problems == []


def test_image_data_matches_the_sae(small_store, small_images):
    from tests.helpers import tiny_sae

    sae = tiny_sae()
    rows = [
        r
        for r in range(len(small_store))
        if small_store.provenance([r])[0][0] == int(small_images.image_I[2])
    ]
    x = small_store[rows].float()
    x_hat = sae(x, raw=True)
    error = ((x - x_hat) ** 2).sum(1) / (x**2).sum(1)
    torch.testing.assert_close(small_images.error_IT[2], error, rtol=1e-4, atol=1e-6)
    codes = sae.encode(x, raw=True)
    top = codes.topk(4, dim=1)
    torch.testing.assert_close(small_images.code_value_ITc[2], top.values.clamp(min=0), rtol=1e-4, atol=1e-6)
    norms = small_images.embed_ITd.float().norm(dim=2)
    assert ((norms - 127).abs() < 2).all()
