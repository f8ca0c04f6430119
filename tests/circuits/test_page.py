"""The graph's HTML page in headless Chromium from file://: columns, nodes, edges, hover, links."""

from __future__ import annotations

import pytest

from tests.circuits.conftest import HOOKS, trace_config, two_columns
from tests.helpers import HOSTILE_LABEL
from vitsae.circuits.graph import build_graph
from vitsae.circuits.page import write_page
from vitsae.circuits.target import Target


@pytest.fixture(scope="module")
def record():
    model, _, columns, batches = two_columns()
    cfg = trace_config(nodes=4, top_k=3, confirm=2, faithfulness=False)
    record, _ = build_graph(model, columns, Target("class", 1, label=HOSTILE_LABEL), batches, cfg)
    return record


def test_the_page_draws_the_graph_and_links_features(tmp_path, page, record):
    browser = tmp_path / "browser"
    browser.mkdir()
    (browser / "feature.html").write_text("<!doctype html><title>feature page</title>")
    path = write_page(tmp_path / "out" / "graph.html", record, {HOOKS[1]: "../browser"})
    page.goto(path.as_uri())
    page.wait_for_selector("circle.node")
    assert page.locator("circle.node").count() == len(record["nodes"])
    assert page.locator("path.edge").count() == len(record["edges"])
    assert page.locator("text.col").all_text_contents() == [*HOOKS, "target"]
    assert HOSTILE_LABEL in page.locator("#title").text_content()
    assert page.evaluate("window.__pwned") is None
    widths = [
        float(w)
        for w in page.locator("path.edge").evaluate_all("es => es.map(e => e.getAttribute('stroke-width'))")
    ]
    assert max(widths) == pytest.approx(7.5) and min(widths) >= 0.5
    colours = set(page.locator("path.edge").evaluate_all("es => es.map(e => e.getAttribute('stroke'))"))
    signs = {edge["attribution"] >= 0 for edge in record["edges"]}
    assert colours == {"#2166ac" if s else "#b2182b" for s in signs}
    # hover: the edge's numbers
    edge = record["edges"][0]
    page.locator("path.edge").first.hover(force=True)
    tip = page.locator("#tip").text_content()
    assert f"{edge['source']} -> {edge['target']}" in tip and "attribution" in tip
    # features of a hook with a browser link to their page; the others do not
    links = page.locator("a.feature-link")
    n_linked = sum(n["kind"] == "feature" and n["hook"] == HOOKS[1] for n in record["nodes"])
    assert links.count() == n_linked
    feature = next(n for n in record["nodes"] if n["kind"] == "feature" and n["hook"] == HOOKS[1])
    page.locator(f"circle[data-id='{feature['id']}']").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"browser/feature.html#{feature['feature']}")
    assert page.problems == []
