"""What write_browser puts on disk, and the inputs it refuses."""

from __future__ import annotations

import base64
import json

import pytest
import torch

from tests.helpers import HOSTILE_LABEL
from vitsae.analysis.logits import LogitEffects
from vitsae.report.browser import MARKER, bucket, write_browser


def read_callback_js(path, prefix):
    text = path.read_text()
    assert text.startswith(prefix) and text.rstrip().endswith(";")
    return json.loads(text[len(prefix) :].rstrip().rstrip(";").rstrip(")"))


def test_site_layout_and_escaping(small_site, small_stats):
    index_html = (small_site / "index.html").read_text()
    assert "<title>tiny &lt;ViT&gt; &amp; co</title>" in index_html and "<ViT>" not in index_html
    index = read_callback_js(small_site / "data" / "index.js", "window.VITSAE_INDEX = ")
    assert len(index["rows"]) == small_stats.n_features and index["n_tokens"] == small_stats.n_tokens
    assert [row[0] for row in index["rows"]] == list(range(small_stats.n_features))
    assert HOSTILE_LABEL in [row[-1] for row in index["rows"]]
    top = [c["key"] for c in index["columns"]].index("top")
    assert [row[top] for row in index["rows"]] == [
        None if i < 0 else i for i in small_stats.top_image_index_Fk[:, 0].tolist()
    ]
    shown = set()
    for f in range(small_stats.n_features):
        data = read_callback_js(small_site / "data" / "f" / bucket(f) / f"{f}.js", "vitsaeFeature(")
        assert data["id"] == f and data["dead"] == (small_stats.fire_count_F[f] == 0)
        if data["dead"]:
            assert data["top_images"] == []
            continue
        lo, counts = data["hist"]
        assert counts == small_stats.hist_FH[f, lo : lo + len(counts)].tolist() and sum(counts) == int(
            small_stats.fire_count_F[f]
        )
        assert len(data["top_images"]) == min(6, int((small_stats.top_image_index_Fk[f] >= 0).sum()))
        for rank, (image, score, _, key, map_b64, mask) in enumerate(data["top_images"]):
            assert mask is None  # no dissection concept, no concept mask
            assert image == int(small_stats.top_image_index_Fk[f, rank]) and key.startswith("shapes")
            assert base64.b64decode(map_b64) == small_stats.top_image_map_FkP[f, rank].numpy().tobytes()
            assert score == pytest.approx(float(small_stats.top_image_score_Fk[f, rank]), rel=1e-3)
        shown |= {row[0] for row in data["top_images"] + data["top_patches"]}
        shown |= {row[1] for row in data["quantiles"]}
        assert sum(count for _, count in data["classes"]) == len(data["top_images"])
        # the tiny head has 5 classes: each is listed on the side it is pushed to
        up, down = data["logits"]["up"], data["logits"]["down"]
        assert all(v > 0 for _, v in up) and all(v < 0 for _, v in down) and len(up) + len(down) <= 5
    # one thumbnail per distinct image shown, and nothing else
    thumbs = {int(p.stem) for p in (small_site / "img").rglob("*.jpg")}
    assert thumbs == shown and len(list((small_site / "img").rglob("*"))) == len(thumbs) + len(
        {bucket(i) for i in thumbs}
    )
    assert json.loads((small_site / MARKER).read_text())["format_version"] == 2


def test_rewriting_replaces_an_earlier_browser_but_refuses_other_folders(tmp_path, small_stats):
    site = tmp_path / "site"
    write_browser(small_stats, site)
    (site / "stale.txt").write_text("from before")
    write_browser(small_stats, site, features=[1])
    assert not (site / "stale.txt").exists() and sorted(
        p.name for p in (site / "data" / "f" / "000").iterdir()
    ) == ["1.js"]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a vitsae browser"):
        write_browser(small_stats, other)
    assert (other / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "site"]  # no scratch folders left


def test_without_a_source_pages_carry_numbers_only(tmp_path, small_stats):
    site = tmp_path / "numbers"
    write_browser(small_stats, site)
    live = int(torch.nonzero(small_stats.fire_count_F)[0])
    data = read_callback_js(site / "data" / "f" / bucket(live) / f"{live}.js", "vitsaeFeature(")
    assert "without the image source" in data["images_note"]
    assert not (site / "img").exists()


def test_bad_feature_ids_and_mismatched_logits_are_refused(tmp_path, small_stats):
    with pytest.raises(ValueError, match=r"features \[9999\] are outside the dictionary of 96"):
        write_browser(small_stats, tmp_path / "a", features=[0, 9999])
    wrong = LogitEffects(*(torch.zeros((3, 2), dtype=torch.long) for _ in range(4)))
    with pytest.raises(ValueError, match="logit effects cover 3 features, the statistics 96"):
        write_browser(small_stats, tmp_path / "b", logits=wrong)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_forked_page_workers_write_the_same_site(tmp_path, small_stats):
    from tests.helpers import shapes
    from vitsae.data.preprocess import Preprocess
    from vitsae.report.browser import BrowserConfig

    def files(site):
        return {
            p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file() and p.name != MARKER
        }

    kwargs = {"source": shapes(), "preprocess": Preprocess(size=(32, 32)), "features": range(0, 96, 7)}
    write_browser(small_stats, tmp_path / "one", config=BrowserConfig(thumb_size=32, patch_size=16), **kwargs)
    write_browser(
        small_stats, tmp_path / "two", config=BrowserConfig(thumb_size=32, patch_size=16, workers=2), **kwargs
    )
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert len(one) > 20 and one == two
