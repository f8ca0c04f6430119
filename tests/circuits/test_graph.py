"""The graph's shape (sparse edges between adjacent columns), integrated gradients' completeness, the
faithfulness curve's end points and the per-patch attributions of one image."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.circuits.conftest import HOOKS, trace_config, two_columns
from tests.helpers import random_sae, shapes
from vitsae.circuits.ablate import ablation_effects
from vitsae.circuits.attribute import node_pass
from vitsae.circuits.columns import make_columns
from vitsae.circuits.graph import build_graph
from vitsae.circuits.target import Target, aggregate_tokens
from vitsae.edit.inputs import image_batches
from vitsae.edit.splice import SpliceSite


@pytest.fixture(scope="module")
def setup():
    return two_columns()


def test_edges_are_sparse_and_join_adjacent_columns(setup):
    model, _, columns, batches = setup
    cfg = trace_config(nodes=6, top_k=3, confirm=4, per_patch_image=5)
    record, tensors = build_graph(model, columns, Target("class", 2), batches, cfg)
    nodes = {n["id"]: n for n in record["nodes"]}
    assert sum(n["kind"] == "feature" for n in nodes.values()) <= 2 * 6
    assert sum(n["kind"] == "error" for n in nodes.values()) == 2
    incoming: dict[str, int] = {}
    for edge in record["edges"]:
        assert nodes[edge["target"]]["column"] == nodes[edge["source"]]["column"] + 1
        incoming[edge["target"]] = incoming.get(edge["target"], 0) + 1
    assert incoming and max(incoming.values()) <= 3
    n_second = sum(n["kind"] == "feature" and n["hook"] == HOOKS[1] for n in nodes.values())
    assert tensors[f"edges.{HOOKS[0]}.{HOOKS[1]}"].shape == (n_second, 128)
    # per-patch attributions of image 5: one row per kept node, one column per token, summing to its
    # share of the node's attribution
    kept = record["per_patch"]["nodes"][HOOKS[1]]
    assert tensors[f"patch_attribution.{HOOKS[1]}"].shape == (len(kept), 17)
    assert record["agreement"]["into_target"]["n_edges"] >= 2


def test_integrated_gradients_are_complete(setup):
    """Summed over a site's features, IG equals the target's change when every feature there is ablated
    (the site spliced alone: with a later SAE spliced the gradient holds its error term)."""
    model, sites, _, batches = setup
    sites = sites[:1]
    target = Target("class", 2)
    sums = node_pass(model, sites, [HOOKS[0]], target, batches(), "sum", 4, steps=64)
    ig_total = float(sums.attribution[HOOKS[0]].sum()) / sums.n_images
    every = [(HOOKS[0], f) for f in range(128)]
    linear = node_pass(model, sites, [HOOKS[0]], target, batches(), "sum", 4)
    grad_total = float(linear.attribution[HOOKS[0]].sum()) / linear.n_images
    from vitsae.edit.edits import FeatureEdit
    from vitsae.edit.splice import spliced

    change = 0.0
    with torch.no_grad():
        for batch in batches():
            with spliced(model, sites):
                before = model(batch.pixels_BCHW)[:, 2]
            with spliced(
                model, sites, edits=[FeatureEdit("ablate", tuple(f for _, f in every), hook_name=HOOKS[0])]
            ):
                after = model(batch.pixels_BCHW)[:, 2]
            change += float((before - after).sum())
    change /= 8
    assert ig_total == pytest.approx(change, rel=2e-3, abs=2e-3)
    assert abs(grad_total - change) > 10 * abs(ig_total - change)  # the linear estimate is off here


def test_faithfulness_curve_ends_at_zero_and_one(setup):
    model, _, columns, batches = setup
    record, _ = build_graph(model, columns, Target("class", 0), batches, trace_config(confirm=0))
    faith = record["faithfulness"]
    assert faith["sizes"][0] == 0
    assert faith["errors_ablated"]["recovery"][0] == pytest.approx(0.0, abs=1e-9)
    assert faith["errors_kept"]["recovery"][-1] == pytest.approx(1.0, abs=1e-4)
    assert faith["errors_kept"]["m"][-1] == pytest.approx(faith["m_full"], rel=1e-4, abs=1e-5)
    for name in ("errors_kept", "errors_ablated"):
        n_80 = faith[name]["n_80"]
        if n_80 is not None:
            assert faith[name]["recovery"][faith["sizes"].index(n_80)] >= 0.8


def test_top_r_aggregation_keeps_the_unedited_tokens():
    acts_BT = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 4.0]])
    value, chosen = aggregate_tokens(acts_BT, "top", 2)
    assert value.tolist() == [5.0, 9.0]
    edited = torch.tensor([[0.0, 0.0, 9.0, 2.0], [5.0, 0.0, 0.0, 4.0]])
    again, _ = aggregate_tokens(edited, "top", 2, chosen)
    assert again.tolist() == [2.0, 9.0]


def test_ablating_a_feature_that_never_fires_changes_nothing(setup):
    model, sites, _, batches = setup
    target = Target("feature", 3, HOOKS[1])
    sums = node_pass(model, sites, [HOOKS[0]], target, batches(), "sum", 4)
    silent = int((sums.fires[HOOKS[0]] == 0).nonzero()[0]) if (sums.fires[HOOKS[0]] == 0).any() else None
    if silent is None:
        pytest.skip("every feature fires on these images")
    (effect,) = ablation_effects(model, sites, [(HOOKS[0], silent)], [[target]], batches(), "sum", 4)
    assert effect == [0.0]


def test_a_cnn_graph_carries_the_expanded_conv_weights():
    from tests.helpers import small_cnn

    model = small_cnn()
    sites = [
        SpliceSite(random_sae(8, "body.1", "relu", seed=1)),
        SpliceSite(random_sae(12, "body.2", seed=2)),
    ]
    columns = make_columns(model, sites, ["a", "b"])
    batches = image_batches(shapes(4), model.preprocess, 4, 4)
    cfg = trace_config(nodes=3, top_k=3, confirm=0, faithfulness=False)
    record, tensors = build_graph(model, columns, Target("class", 0), batches, cfg)
    nodes = {n["id"]: n for n in record["nodes"]}
    between = [
        e
        for e in record["edges"]
        if nodes[e["source"]]["kind"] == "feature" and nodes[e["target"]]["kind"] == "feature"
    ]
    assert between and all(e["weight"] is not None for e in between)
    assert tensors["conv_weights.body.1.body.2"].shape[2:] == (3, 3)
    into_logit = [
        e for e in record["edges"] if e["target"] == "logit:0" and nodes[e["source"]]["kind"] == "feature"
    ]
    assert into_logit and all(e["weight"] is None for e in into_logit)  # no linear head on a residual


def test_the_faithfulness_picture_of_a_target_nothing_moves(tmp_path):
    from vitsae.circuits.picture import faithfulness_figure

    flat = {"recovery": [None, None], "n_80": None, "n_90": None, "m": [1.0, 1.0]}
    record = {
        "target": {"label": "", "id": "logit:0"},
        "faithfulness": {
            "sizes": [0, 3],
            "m_full": 1.0,
            "m_empty": 1.0,
            "errors_kept": flat,
            "errors_ablated": flat,
        },
    }
    assert faithfulness_figure(record, tmp_path / "f.png").stat().st_size > 1000


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 12),
    st.integers(1, 15),
    st.integers(0, 2**31 - 1),
)
def test_top_r_sums_the_r_largest_tokens(batch, n_tokens, top_r, seed):
    acts_BT = torch.randn(batch, n_tokens, generator=torch.Generator().manual_seed(seed)).relu()
    value_B, chosen_BR = aggregate_tokens(acts_BT, "top", top_r)
    r = min(top_r, n_tokens)
    assert chosen_BR.shape == (batch, r)
    expected = acts_BT.sort(dim=1, descending=True).values[:, :r].sum(1)
    assert torch.allclose(value_B, expected)
    assert torch.equal(aggregate_tokens(acts_BT, "sum", top_r)[0], acts_BT.sum(1))
    again, same = aggregate_tokens(acts_BT * 2, "top", top_r, chosen_BR)
    assert same is chosen_BR and torch.allclose(again, 2 * value_B)
