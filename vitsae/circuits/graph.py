"""Build a circuit graph: node attributions, sparse edges with their three estimates, faithfulness.

Columns are the SAEs in forward order, then the target. Nodes are features aggregated over an image's
tokens (and averaged over the images): per column the `nodes` features with the largest |attribution| to the
target, plus the column's error node. Edges join adjacent columns only; each target node keeps its `top_k`
sources among the previous column's nodes whose |attribution| is at least `edge_threshold` times its largest.
Into the final target an edge is the source's attribution to it; between SAEs it is a_i * d(a_j)/d(a_i)
with the model's own gradient (no SAE lies between adjacent columns). A node's attribution in an earlier
column is its total effect on the target through the later SAEs with their error terms held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from vitsae.circuits.ablate import ablation_effects
from vitsae.circuits.attribute import NodeSums, edge_pass, node_pass
from vitsae.circuits.columns import Column
from vitsae.circuits.config import TraceConfig
from vitsae.circuits.prune import faithfulness_curve
from vitsae.circuits.target import Target
from vitsae.circuits.weights import candidates, logit_weights, weights_between
from vitsae.data.loader import ImageBatch
from vitsae.errors import InvalidValue
from vitsae.eval.faithfulness import spearman


def node_id(hook: str, feature: int | None) -> str:
    return f"{hook}:error" if feature is None else f"{hook}:{feature}"


def _top_sources(values: dict[str, float], k: int, threshold: float) -> list[tuple[str, float]]:
    """The k largest |value| sources at least `threshold` times the largest |value|."""
    ranked = sorted(values.items(), key=lambda kv: -abs(kv[1]))
    if not ranked or ranked[0][1] == 0:
        return []
    floor = threshold * abs(ranked[0][1])
    return [(s, v) for s, v in ranked[:k] if v != 0 and abs(v) >= floor]


def build_graph(
    model,
    columns: list[Column],
    target: Target,
    batches: Callable[[], Iterable[ImageBatch]],
    cfg: TraceConfig,
    mean_active: dict[str, torch.Tensor] | None = None,
    total: int | None = None,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The graph as a JSON-ready dict and the large arrays (see docs/circuits.md). `cfg` gives the
    graph's size and estimators (its inputs are not read); `mean_active` is E[a_i | a_i > 0] per source
    hook from statistics."""
    sites = [c.site for c in columns]
    sources = [c for c in columns if not (target.kind == "feature" and c.hook == target.hook)]
    hooks = [c.hook for c in sources]
    common = dict(aggregate=cfg.aggregate, top_r=cfg.top_r)
    sums = node_pass(
        model,
        sites,
        hooks,
        target,
        batches(),
        steps=cfg.steps,
        patch_image=cfg.per_patch_image,
        progress=cfg.progress,
        total=total,
        **common,
    )
    n = sums.n_images
    attribution = {h: sums.attribution[h] / n for h in hooks}
    if mean_active is None:
        mean_active = {h: sums.activation[h] / sums.fires[h].clamp(min=1) for h in hooks}
    tensors: dict[str, torch.Tensor] = {}
    nodes: dict[str, dict] = {}
    kept: dict[str, list[int]] = {}
    for index, column in enumerate(sources):
        h = column.hook
        attr_F = attribution[h]
        order = attr_F.abs().argsort(descending=True)[: cfg.nodes]
        kept[h] = [int(f) for f in order if attr_F[f] != 0]
        fires = sums.fires[h].double()
        for f in kept[h]:
            nodes[node_id(h, f)] = {
                "id": node_id(h, f),
                "column": index,
                "hook": h,
                "feature": f,
                "kind": "feature",
                "attribution": float(attr_F[f]),
                "mean_activation": float(sums.activation[h][f] / n),
                "mean_active": float(mean_active[h][f]),
                "fire_tokens": int(fires[f]),
            }
        nodes[node_id(h, None)] = {
            "id": node_id(h, None),
            "column": index,
            "hook": h,
            "feature": None,
            "kind": "error",
            "attribution": sums.error_attribution[h] / n,
        }
        tensors[f"attribution.{h}"] = attr_F.float()
        tensors[f"mean_activation.{h}"] = (sums.activation[h] / n).float()
        if h in sums.patch_TF:
            tensors[f"patch_attribution.{h}"] = (sums.patch_TF[h][:, kept[h]]).T.float().contiguous()
    nodes[target.key] = {
        "id": target.key,
        "column": len(sources),
        "hook": target.hook or "logits",
        "kind": "target",
        "feature": target.index,
        "label": target.label,
        "attribution": None,
        "mean_activation": sums.target_sum / n,
    }
    edges = _edges(
        model, columns, sources, target, batches, cfg, attribution, sums, kept, mean_active, nodes, tensors
    )
    record = {
        "columns": [
            {
                "hook": c.hook,
                "sae": c.path,
                "d_sae": c.n_features,
                "role": "source" if c in sources else "target",
            }
            for c in columns
        ],
        "target": {
            "kind": target.kind,
            "index": target.index,
            "hook": target.hook,
            "label": target.label,
            "id": target.key,
            "mean": sums.target_sum / n,
        },
        "n_images": n,
        "attribution_method": f"integrated_gradients:{cfg.steps}" if cfg.steps else "gradient",
        "nodes": list(nodes.values()),
        "edges": edges,
    }
    if cfg.confirm:
        record["agreement"] = _confirm(model, sites, edges, nodes, target, batches, cfg)
    if cfg.faithfulness:
        ranking = sorted(
            ((h, f) for h in hooks for f in attribution[h].nonzero().flatten().tolist()),
            key=lambda hf: -abs(float(attribution[hf[0]][hf[1]])),
        )
        record["faithfulness"] = faithfulness_curve(
            model,
            sites,
            target,
            batches(),
            ranking,
            {h: sums.codes_TF[h] / n for h in hooks},
            {h: sums.errors_TD[h] / n for h in hooks},
            progress=cfg.progress,
            **common,
        )
    if cfg.per_patch_image >= 0:
        record["per_patch"] = {
            "image": cfg.per_patch_image,
            "nodes": {h: [node_id(h, f) for f in kept[h]] for h in hooks if h in sums.patch_TF},
        }
    return record, tensors


def _edges(
    model,
    columns,
    sources,
    target,
    batches,
    cfg,
    attribution,
    sums: NodeSums,
    kept,
    mean_active,
    nodes,
    tensors,
):
    """Edges into the target from the last source column, then between adjacent source columns."""
    n = sums.n_images
    sites = [c.site for c in columns]
    last = sources[-1]
    into_target = {node_id(last.hook, f): float(attribution[last.hook][f]) for f in kept[last.hook]}
    into_target[node_id(last.hook, None)] = sums.error_attribution[last.hook] / n
    if target.kind == "class":
        try:
            weight_F = logit_weights(model, last.site.sae, target.index)[:, 0]
        except InvalidValue:  # no linear head on the residual
            weight_F = None
    else:
        target_sae = next(c.site.sae for c in columns if c.hook == target.hook)
        _, summed_FJ, _ = weights_between(
            model, last.hook, target.hook, last.site.sae, target_sae, torch.tensor([target.index])
        )
        weight_F = None if summed_FJ is None else summed_FJ[:, 0]
    edges = _edge_rows(into_target, target.key, weight_F, cfg.top_k, cfg.edge_threshold)
    if weight_F is not None:
        _add_candidates(nodes[target.key], weight_F, mean_active[last.hook], cfg.top_k)
    for previous, column in zip(sources[:-1], sources[1:], strict=True):
        targets = [Target("feature", f, column.hook) for f in kept[column.hook]]
        if not targets:
            continue
        edges_JF, errors_J, _ = edge_pass(
            model, sites, previous.hook, targets, batches(), cfg.aggregate, cfg.top_r, cfg.steps, cfg.progress
        )
        edges_JF, errors_J = edges_JF / n, errors_J / n
        tensors[f"edges.{previous.hook}.{column.hook}"] = edges_JF.float()
        _, summed_FJ, per_offset = weights_between(
            model,
            previous.hook,
            column.hook,
            previous.site.sae,
            column.site.sae,
            torch.tensor(kept[column.hook]),
        )
        if per_offset is not None:
            tensors[f"conv_weights.{previous.hook}.{column.hook}"] = per_offset.float()
        for j, t in enumerate(targets):
            values = {node_id(previous.hook, f): float(edges_JF[j, f]) for f in kept[previous.hook]}
            values[node_id(previous.hook, None)] = float(errors_J[j])
            weight_F = None if summed_FJ is None else summed_FJ[:, j]
            edges += _edge_rows(values, t.key, weight_F, cfg.top_k, cfg.edge_threshold)
            if weight_F is not None:
                _add_candidates(nodes[t.key], weight_F, mean_active[previous.hook], cfg.top_k)
    return edges


def _edge_rows(values: dict[str, float], target_id: str, weight_F, k: int, threshold: float) -> list[dict]:
    rows = []
    for source, value in _top_sources(values, k, threshold):
        feature = source.rsplit(":", 1)[1]
        weight = None if weight_F is None or feature == "error" else float(weight_F[int(feature)])
        rows.append(
            {"source": source, "target": target_id, "attribution": value, "weight": weight, "ablation": None}
        )
    return rows


def _add_candidates(node: dict, weight_F: torch.Tensor, mean_active_F: torch.Tensor, k: int) -> None:
    """The target node's top-k sources by |V| * E[a | a > 0] over every feature of the previous column."""
    indices, scores = candidates(weight_F[:, None], mean_active_F, k)
    node["weight_candidates"] = [[int(i), float(s)] for i, s in zip(indices[0], scores[0], strict=True)]


def _confirm(model, sites, edges: list[dict], nodes: dict, target: Target, batches, cfg) -> dict:
    """Ablate the sources of the `confirm` largest feature edges into the target and of the `confirm`
    largest between SAEs (each by |attribution| over the largest into its own target node); the rank
    correlation of attribution with minus the measured change, into the target and over all confirmed."""
    features = [e for e in edges if nodes[e["source"]]["kind"] == "feature"]
    scale: dict[str, float] = {}
    for edge in features:
        scale[edge["target"]] = max(scale.get(edge["target"], 0.0), abs(edge["attribution"]))
    into = sorted((e for e in features if e["target"] == target.key), key=lambda e: -abs(e["attribution"]))
    between = [e for e in features if e["target"] != target.key]
    between.sort(key=lambda e: -abs(e["attribution"]) / scale[e["target"]])
    chosen = into[: cfg.confirm] + between[: cfg.confirm]
    by_source: dict[str, list[dict]] = {}
    for edge in chosen:
        by_source.setdefault(edge["source"], []).append(edge)
    sources = [(nodes[s]["hook"], nodes[s]["feature"]) for s in by_source]
    targets = [[_as_target(nodes[e["target"]], target) for e in group] for group in by_source.values()]
    effects = ablation_effects(
        model, sites, sources, targets, batches(), cfg.aggregate, cfg.top_r, cfg.progress
    )
    for group, row in zip(by_source.values(), effects, strict=True):
        for edge, value in zip(group, row, strict=True):
            edge["ablation"] = value
    return {
        "into_target": _agreement(into[: cfg.confirm], scale),
        "all": _agreement(chosen, scale),
    }


def _agreement(edges: list[dict], scale: dict[str, float]) -> dict:
    """Spearman of attribution and minus ablation (each over its target's largest |attribution|, so edges
    into different targets compare), and the fraction of edges whose signs agree."""
    if len(edges) < 2:
        return {"n_edges": len(edges), "spearman": None, "sign_agreement": None}
    attr = torch.tensor([[e["attribution"] / scale[e["target"]] for e in edges]], dtype=torch.float64)
    measured = torch.tensor([[-e["ablation"] / scale[e["target"]] for e in edges]], dtype=torch.float64)
    agree = float((attr.sign() == measured.sign()).double().mean())
    return {"n_edges": len(edges), "spearman": float(spearman(attr, measured)[0]), "sign_agreement": agree}


def _as_target(node: dict, target: Target) -> Target:
    return target if node["kind"] == "target" else Target("feature", node["feature"], node["hook"])
