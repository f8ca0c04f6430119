"""On a model with nothing but the residual stream between two hooks, the three estimators agree."""

from __future__ import annotations

import pytest
import torch

from tests.circuits.conftest import trace_config
from tests.helpers import random_sae, shapes, tiny_vit
from vitsae.circuits.columns import make_columns
from vitsae.circuits.graph import build_graph
from vitsae.circuits.target import Target
from vitsae.circuits.weights import residual_weights, weight_kind
from vitsae.edit.inputs import image_batches
from vitsae.edit.splice import SpliceSite


@pytest.mark.parametrize("architecture", ["topk", "relu"])
def test_weights_attribution_and_ablation_agree_on_the_residual_stream(architecture):
    model = tiny_vit()
    # blocks.0.hook_resid_post feeds blocks.1.hook_resid_pre with nothing in between
    sae_l = random_sae(32, "blocks.0.hook_resid_post", architecture, seed=3)
    sae_m = random_sae(32, "blocks.1.hook_resid_pre", "relu", seed=4)
    with torch.no_grad():
        sae_m.b_enc.fill_(1000.0)  # every feature of m active on every token: a_j is linear in its input
    sites = [SpliceSite(sae_l), SpliceSite(sae_m)]
    columns = make_columns(model, sites, ["l", "m"])
    assert weight_kind(model, columns[0].hook, columns[1].hook) == "residual"
    target = Target("feature", 5, "blocks.1.hook_resid_pre")
    cfg = trace_config(nodes=128, top_k=128, edge_threshold=0.0, confirm=12, faithfulness=False)
    batches = image_batches(shapes(8), model.preprocess, 8, 4)
    record, _ = build_graph(model, columns, target, batches, cfg)
    nodes = {n["id"]: n for n in record["nodes"]}
    edges = [e for e in record["edges"] if nodes[e["source"]]["kind"] == "feature"]
    assert len(edges) >= 12
    V_F = residual_weights(sae_l, sae_m, torch.tensor([5]))[:, 0]
    confirmed = 0
    for edge in edges:
        source = nodes[edge["source"]]
        assert edge["weight"] == pytest.approx(float(V_F[source["feature"]]), rel=1e-9)
        # weights x the source's activation (summed over tokens, mean over images) = attribution
        assert edge["weight"] * source["mean_activation"] == pytest.approx(
            edge["attribution"], rel=1e-4, abs=1e-4
        )
        if edge["ablation"] is not None:
            assert -edge["ablation"] == pytest.approx(edge["attribution"], rel=1e-4, abs=1e-3)
            confirmed += 1
    assert confirmed == 12
    assert record["agreement"]["into_target"]["spearman"] == pytest.approx(1.0)
