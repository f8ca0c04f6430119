"""A static HTML page of a circuit graph that opens from file:// (no server, no fetch, no external files).

Columns are the SAEs in forward order and the target on the right; a node's area follows |attribution|, an
edge's width |attribution| (over the largest into the same column), blue for positive and red for negative;
hovering shows the numbers; a feature node links to its page in the SAE's feature browser
(`feature.html#<id>`) when one was given. The graph travels inside the page as JSON in a non-executed script
element (`<` escaped), and every text reaches the page through `textContent`.
"""

from __future__ import annotations

import json
from pathlib import Path

from vitsae.fileio import atomic_path

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>circuit</title>
<style>
body { font: 13px sans-serif; margin: 16px; color: #222; }
#tip { position: fixed; pointer-events: none; background: #fff; border: 1px solid #888; padding: 4px 6px;
       white-space: pre; display: none; font: 12px monospace; }
.col { font-weight: bold; } svg text { font-size: 11px; }
a text { fill: #0645ad; text-decoration: underline; }
</style></head><body>
<h1 id="title"></h1><p id="summary"></p><svg id="graph"></svg><div id="tip"></div>
<script type="application/json" id="graph-data">__DATA__</script>
<script>
"use strict";
(() => {
const data = JSON.parse(document.getElementById("graph-data").textContent);
const graph = data.graph, links = data.links, NS = "http://www.w3.org/2000/svg";
const svg = document.getElementById("graph"), tip = document.getElementById("tip");
function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  parent.appendChild(node); return node;
}
function fmt(v) { return v === null || v === undefined ? "-" : Number(v).toPrecision(4); }
function hover(target, text) {
  target.addEventListener("mousemove", e => { tip.textContent = text; tip.style.display = "block";
    tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px"; });
  target.addEventListener("mouseleave", () => { tip.style.display = "none"; });
}
const t = graph.target;
document.getElementById("title").textContent = "Circuit of " + (t.label || t.id);
document.getElementById("summary").textContent = "mean target " + fmt(t.mean) + " over " + graph.n_images +
  " images; attribution: " + graph.attribution_method + "; " + graph.edges.length + " edges";
const columns = [...graph.columns.filter(c => c.role === "source").map(c => c.hook), "target"];
const byColumn = columns.map(() => []);
for (const n of graph.nodes) byColumn[n.column].push(n);
for (const list of byColumn) list.sort((a, b) => Math.abs(b.attribution || 0) - Math.abs(a.attribution || 0));
const W = 260, H = 44, TOP = 40, pos = {};
const maxAttr = Math.max(1e-12, ...graph.nodes.map(n => Math.abs(n.attribution || 0)));
const nodeById = Object.fromEntries(graph.nodes.map(n => [n.id, n])), maxEdge = {};
for (const e of graph.edges) {  // per target column: edges into SAE features and into a logit differ in units
  const c = nodeById[e.target].column;
  maxEdge[c] = Math.max(maxEdge[c] || 1e-12, Math.abs(e.attribution));
}
const height = TOP + H * Math.max(...byColumn.map(l => l.length)) + 20;
svg.setAttribute("width", W * columns.length + 40); svg.setAttribute("height", height);
columns.forEach((name, c) => {
  const label = el("text", {x: 20 + c * W, y: 16, class: "col"}, svg);
  label.textContent = c === columns.length - 1 ? "target" : name;
  byColumn[c].forEach((n, r) => { pos[n.id] = [40 + c * W, TOP + 20 + r * H]; });
});
const edgeLayer = el("g", {id: "edges"}, svg), nodeLayer = el("g", {id: "nodes"}, svg);
for (const e of graph.edges) {
  const [x1, y1] = pos[e.source], [x2, y2] = pos[e.target];
  const width = 0.5 + 7 * Math.abs(e.attribution) / maxEdge[nodeById[e.target].column];
  const line = el("path", {d: `M${x1},${y1} C${x1 + W / 2},${y1} ${x2 - W / 2},${y2} ${x2},${y2}`,
    fill: "none", stroke: e.attribution >= 0 ? "#2166ac" : "#b2182b", "stroke-width": width,
    "stroke-opacity": 0.6, class: "edge"}, edgeLayer);
  hover(line, `${e.source} -> ${e.target}\\nattribution ${fmt(e.attribution)}\\nweight ${fmt(e.weight)}` +
    `\\nablation ${fmt(e.ablation)}`);
}
for (const n of graph.nodes) {
  const [x, y] = pos[n.id];
  let parent = nodeLayer;
  const browser = links[n.hook];
  if (browser && n.kind === "feature") {
    parent = el("a", {href: browser + "/feature.html#" + n.feature, class: "feature-link"}, nodeLayer);
  }
  const radius = 4 + 10 * Math.sqrt(Math.abs(n.attribution || maxAttr) / maxAttr);
  const colour = n.kind === "error" ? "#999" : n.kind === "target" ? "#333" :
    (n.attribution >= 0 ? "#2166ac" : "#b2182b");
  const circle = el("circle", {cx: x, cy: y, r: radius, fill: colour, class: "node", "data-id": n.id},
    parent);
  const label = el("text", {x: x + 16, y: y + 4}, parent);
  label.textContent = n.kind === "error" ? "error" : n.kind === "target" ? (graph.target.label || n.id) :
    "#" + n.feature;
  const lines = [n.id, "kind " + n.kind, "attribution " + fmt(n.attribution),
    "mean activation " + fmt(n.mean_activation)];
  if (n.mean_active !== undefined) lines.push("E[a | a > 0] " + fmt(n.mean_active));
  hover(circle, lines.join("\\n"));
}
})();
</script></body></html>
"""


def write_page(path: Path, record: dict, links: dict[str, str]) -> Path:
    """Write the page of `record` (graph.json's content); `links` maps an SAE hook to its browser folder."""
    data = json.dumps({"graph": record, "links": links}).replace("<", "\\u003c")
    with atomic_path(path) as tmp:
        Path(tmp).write_text(TEMPLATE.replace("__DATA__", data), encoding="utf-8")
    return path
