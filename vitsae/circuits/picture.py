"""A PNG of a circuit graph for papers: the same layout as the HTML page (columns in forward order,
edge width by |attribution| over the largest into the same column, blue positive, red negative, grey error
nodes)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vitsae.fileio import atomic_path  # noqa: E402


def layout(record: dict) -> tuple[list[str], dict[str, tuple[float, float]]]:
    """Column names and each node's (x, y): x its column, y its rank by |attribution| in the column."""
    names = [c["hook"] for c in record["columns"] if c["role"] == "source"] + ["target"]
    by_column: dict[int, list[dict]] = {}
    for node in record["nodes"]:
        by_column.setdefault(node["column"], []).append(node)
    positions = {}
    for column, nodes in by_column.items():
        nodes.sort(key=lambda n: -abs(n["attribution"] or 0))
        for rank, node in enumerate(nodes):
            positions[node["id"]] = (float(column), -float(rank))
    return names, positions


def _label(node: dict, record: dict) -> str:
    if node["kind"] == "error":
        return "error"
    if node["kind"] == "target":
        return record["target"]["label"] or node["id"]
    return f"#{node['feature']}"


def graph_figure(record: dict, path: Path) -> Path:
    names, positions = layout(record)
    rows = max(1, max(-y for _, y in positions.values()) + 1)
    fig, ax = plt.subplots(figsize=(2.6 * len(names) + 1, 0.45 * rows + 1.5))
    nodes = {node["id"]: node for node in record["nodes"]}
    largest: dict[int, float] = {}  # per target column: its edges' units differ (activations, logits)
    for edge in record["edges"]:
        column = nodes[edge["target"]]["column"]
        largest[column] = max(largest.get(column, 1e-12), abs(edge["attribution"]))
    for edge in record["edges"]:
        (x1, y1), (x2, y2) = positions[edge["source"]], positions[edge["target"]]
        colour = "#2166ac" if edge["attribution"] >= 0 else "#b2182b"
        width = 0.4 + 5 * abs(edge["attribution"]) / largest[nodes[edge["target"]]["column"]]
        ax.plot([x1, x2], [y1, y2], color=colour, linewidth=width, alpha=0.6, zorder=1)
    top_node = max([abs(n["attribution"] or 0) for n in record["nodes"]] + [1e-12])
    for node in record["nodes"]:
        x, y = positions[node["id"]]
        attribution = node["attribution"]
        if node["kind"] == "error":
            colour = "#999999"
        elif node["kind"] == "target":
            colour = "#333333"
        else:
            colour = "#2166ac" if attribution >= 0 else "#b2182b"
        size = 30 + 220 * (abs(attribution) / top_node if attribution is not None else 1.0)
        ax.scatter([x], [y], s=size, color=colour, zorder=2)
        ax.annotate(_label(node, record), (x, y), xytext=(8, -3), textcoords="offset points", fontsize=8)
    for column, name in enumerate(names):
        ax.text(column, 0.9, name, ha="center", fontsize=9, weight="bold")
    ax.set_xlim(-0.4, len(names) - 0.4)
    ax.set_ylim(-rows + 0.3, 1.4)
    ax.axis("off")
    target = record["target"]
    ax.set_title(f"circuit of {target['label'] or target['id']} ({record['n_images']} images)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130)
    plt.close(fig)
    return path


def faithfulness_figure(record: dict, path: Path) -> Path:
    """The recovery of the target against the circuit size n (log axis), errors kept and mean-ablated."""
    faith = record["faithfulness"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sizes = [max(n, 0.5) for n in faith["sizes"]]  # n = 0 drawn at 0.5 on the log axis
    for name, colour in (("errors_kept", "#2166ac"), ("errors_ablated", "#b2182b")):
        recovery = [r if r is not None else float("nan") for r in faith[name]["recovery"]]
        ax.plot(sizes, recovery, marker="o", markersize=3, color=colour, label=name.replace("_", " "))
    for level in (0.8, 0.9):
        ax.axhline(level, color="#888", linewidth=0.6, linestyle="--")
    if faith["m_full"] == faith["m_empty"]:  # no recovery to draw: the ablations do not move the target
        ax.text(0.5, 0.5, "recovery undefined: m(M) = m(empty)", ha="center", transform=ax.transAxes)
    else:
        ax.set_xscale("log")
    ax.set_xlabel("features kept (n; 0 at the left edge)")
    ax.set_ylabel("recovery of the target")
    ax.set_title(f"faithfulness, {record['target']['label'] or record['target']['id']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130)
    plt.close(fig)
    return path
