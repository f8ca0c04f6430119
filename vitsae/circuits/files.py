"""The files of a traced circuit: graph.json, graph.safetensors and features.json (docs/circuits.md).

All three are data: JSON and safetensors only, read without running any code from them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from vitsae.circuits.target import CircuitError
from vitsae.fileio import check_format, read_json, save_tensors_atomic, write_json_atomic

GRAPH_FORMAT = "vitsae.circuit_graph"
FEATURES_FORMAT = "vitsae.circuit_features"
FORMAT_VERSION = 1
GRAPH_JSON = "graph.json"
GRAPH_TENSORS = "graph.safetensors"
FEATURES_JSON = "features.json"


def write_graph(out: Path, record: dict, tensors: dict[str, torch.Tensor]) -> None:
    """graph.json (format and version first, then `record`) and graph.safetensors (its arrays)."""
    out.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(
        out / GRAPH_TENSORS,
        {k: v.contiguous() for k, v in tensors.items()},
        metadata={"format": GRAPH_FORMAT, "format_version": str(FORMAT_VERSION)},
    )
    document = {"format": GRAPH_FORMAT, "format_version": FORMAT_VERSION, "tensors": GRAPH_TENSORS, **record}
    write_json_atomic(out / GRAPH_JSON, document)


def read_graph(out: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The graph written by `write_graph`; refuses another format or version."""
    path = Path(out) / GRAPH_JSON
    if not path.is_file():
        raise CircuitError(f"no {GRAPH_JSON} in {out}: not a `vitsae trace` output folder")
    record = check_format(path, read_json(path), GRAPH_FORMAT, FORMAT_VERSION, CircuitError)
    tensor_path = Path(out) / GRAPH_TENSORS
    return record, (load_file(str(tensor_path)) if tensor_path.is_file() else {})


def feature_links(record: dict) -> dict:
    """Per SAE hook and feature: the graph's upstream sources and downstream targets (attribution order)."""
    nodes = {node["id"]: node for node in record["nodes"]}
    saes = {c["hook"]: {"sae": c["sae"], "features": {}} for c in record["columns"]}

    def entry(node: dict, edge: dict) -> dict:
        row = {"hook": node["hook"], "feature": node["feature"], "kind": node["kind"]}
        return {**row, **{k: edge[k] for k in ("attribution", "weight", "ablation")}}

    for edge in record["edges"]:
        source, target = nodes[edge["source"]], nodes[edge["target"]]
        for here, there, side in ((target, source, "upstream"), (source, target, "downstream")):
            if here["kind"] == "error" or here["hook"] not in saes:
                continue
            lists = saes[here["hook"]]["features"].setdefault(
                str(here["feature"]), {"upstream": [], "downstream": []}
            )
            lists[side].append(entry(there, edge))
    for sae in saes.values():
        for lists in sae["features"].values():
            for side in lists.values():
                side.sort(key=lambda row: -abs(row["attribution"]))
    return {
        "format": FEATURES_FORMAT,
        "format_version": FORMAT_VERSION,
        "target": record["target"],
        "saes": saes,
    }


def write_feature_links(out: Path, record: dict) -> Path:
    path = Path(out) / FEATURES_JSON
    write_json_atomic(path, feature_links(record))
    return path
