"""`vitsae ablation`: each feature ablated on its own top images, against a direct recomputation."""

from __future__ import annotations

import json

import torch

from tests.helpers import harvest_small_store, shapes, tiny_sae, tiny_vit
from vitsae.analysis.compute import compute_feature_stats
from vitsae.analysis.stats import StatsConfig
from vitsae.cli import main
from vitsae.edit import FeatureEdit, spliced
from vitsae.sae.io import save_sae


def test_ablation_effects_match_a_direct_ablation(tmp_path, capsys):
    store = harvest_small_store(tmp_path / "store")
    sae = tiny_sae()
    save_sae(sae, tmp_path / "sae")
    stats = compute_feature_stats(store, sae, StatsConfig(k_images=4))
    stats.meta["sae"] = str(tmp_path / "sae")
    stats.save(tmp_path / "stats")
    args = ["ablation", "--stats", str(tmp_path / "stats"), "--model", "module:tests.helpers:tiny_vit"]
    assert main([*args, "--images-per-feature", "3", "--no-progress"]) == 0
    record = json.loads((tmp_path / "stats" / "ablation_effects.json").read_text())
    assert record["format"] == "vitsae.ablation_effects" and record["images_per_feature"] == 3
    live = torch.nonzero(stats.fire_count_F > 0).squeeze(1).tolist()
    assert sorted(map(int, record["features"])) == live
    feature = max(live, key=lambda f: record["features"][str(f)]["n_changed"])
    images = [int(i) for i in stats.top_image_index_Fk[feature, :3] if i >= 0]
    model, source = tiny_vit(), shapes()
    pixels = torch.stack([model.preprocess(source[i].image) for i in images])
    with torch.no_grad():
        with spliced(model, [sae]):
            before = model(pixels).double()
        with spliced(model, [sae], edits=[FeatureEdit("ablate", (feature,))]):
            after = model(pixels).double()
    got = record["features"][str(feature)]
    torch.testing.assert_close(
        torch.tensor(got["mean_logit_change"], dtype=torch.float64),
        (after - before).mean(0),
        atol=1e-4,
        rtol=0,
    )
    assert got["n_changed"] == int((before.argmax(1) != after.argmax(1)).sum())
    assert "move a prediction" in capsys.readouterr().out
    assert main([*args, "--features", "999"]) == 2
    assert "out of range" in capsys.readouterr().err
