"""The measured-ablation panel: `vitsae ablation` output rendered on a feature page, in headless Chromium."""

from __future__ import annotations

import json

from tests.helpers import shapes, tiny_sae, tiny_vit
from vitsae.analysis.ablation import ablation_effects
from vitsae.analysis.ablation_file import read_ablation_effects, write_ablation_effects
from vitsae.edit import SpliceSite
from vitsae.report.browser import write_browser


def test_feature_page_shows_the_measured_ablation(tmp_path, small_stats, page):
    model = tiny_vit()
    live = small_stats.image_fire_count_F.argsort(descending=True)[:3].tolist()  # four top images each
    effects = ablation_effects(
        model, SpliceSite(tiny_sae()), small_stats, shapes(), model.preprocess, live, 4, False
    )
    names = shapes().class_names[:5]
    write_ablation_effects(
        tmp_path / "stats", {"class_names": names, "images_per_feature": 4, "features": effects}
    )
    record = read_ablation_effects(tmp_path / "stats")
    write_browser(small_stats, tmp_path / "site", ablation=record)
    feature = max(live, key=lambda f: effects[str(f)]["n_changed"])
    text = (tmp_path / "site" / "data" / "f" / "000" / f"{feature}.js").read_text()
    data = json.loads(text[len("vitsaeFeature(") :].rstrip().rstrip(";").rstrip(")"))
    shown = data["ablation"]
    assert shown["n_images"] == 4 and shown["n_changed"] == effects[str(feature)]["n_changed"]
    change = effects[str(feature)]["mean_logit_change"]
    assert shown["up"][0][0] == names[max(range(5), key=lambda c: change[c])] or max(change) <= 0
    page.goto((tmp_path / "site" / "feature.html").as_uri() + f"#{feature}")
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("#ablation-moved").startswith(f"{shown['n_changed']} of 4 top-1 predictions move")
    assert page.locator("section:has(#ablation-moved) .bars .row").count() == len(shown["up"]) + len(
        shown["down"]
    )
    assert "What ablating it does" in page.inner_text("main")
    assert page.problems == []
