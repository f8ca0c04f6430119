"""Optional feature-page panels from other stages' files: dissection labels, feature visualisations and
the upstream and downstream features of a traced circuit.

Both are read as data only (JSON and PNG), checked against their documented formats (docs/dissection.md,
docs/featureviz.md), and reduced to what the pages show. Visualisation files are named by bare file names
inside the featureviz folder's `images/`; anything else (a path, a missing or non-PNG file) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from vitsae.errors import InvalidValue, MissingFile
from vitsae.fileio import check_format, read_json

DISSECTION_JSON = "dissection.json"  # as vitsae.analysis.dissection writes it (format 1)
FEATUREVIZ_JSON = "featureviz.json"  # as vitsae.featureviz.run writes it (format 1)
CIRCUIT_JSON = "features.json"  # as vitsae.circuits.files writes it (format 1)
CIRCUIT_ROWS = 8  # upstream and downstream nodes shown per feature


def read_dissection(stats_dir: str | Path, n_features: int) -> dict[int, dict[str, Any]] | None:
    """Each labelled SAE feature's concept from the statistics folder's `dissection.json`, or None if absent:
    {feature: {concept, iou, ci, runner_up, runner_up_iou}} for features whose best IoU is above 0."""
    path = Path(stats_dir) / DISSECTION_JSON
    if not path.is_file():
        return None
    info = check_format(path, read_json(path), "vitsae.dissection", 1, fix="rerun `vitsae dissect`")
    basis = info.get("bases", {}).get("sae")
    if basis is None:
        return None
    labels = {}
    for unit in basis["units"]:
        feature, iou = int(unit["unit"]), float(unit["iou"])
        if not 0 <= feature < n_features:
            raise InvalidValue(f"{path} labels feature {feature}; the statistics have {n_features} features")
        if iou > 0:
            labels[feature] = {
                "concept": str(unit["concept"]),
                "iou": round(iou, 4),
                "ci": [round(float(v), 4) for v in unit.get("ci", [])],
                "runner_up": None if unit.get("runner_up") is None else str(unit["runner_up"]),
                "runner_up_iou": round(float(unit.get("runner_up_iou", 0.0)), 4),
            }
    return labels


def read_featureviz(folder: str | Path, n_features: int) -> dict[int, dict[str, Any]]:
    """The visualisations of SAE features (targets `feature` or `decoder`) in a `vitsae visualize` folder:
    {feature: {kind, files: [Path], objective, ratio}}."""
    folder = Path(folder)
    path = folder / FEATUREVIZ_JSON
    if not path.is_file():
        raise MissingFile(f"no {FEATUREVIZ_JSON} in {folder}: not a `vitsae visualize` output folder")
    info = check_format(path, read_json(path), "vitsae.featureviz", 1, fix="rerun `vitsae visualize`")
    kind = info.get("config", {}).get("target")
    if kind not in ("feature", "decoder"):
        raise InvalidValue(f"{path} visualises {kind!r} targets; the browser shows SAE features and decoders")
    out: dict[int, dict[str, Any]] = {}
    for target in info["targets"]:
        feature = int(target["index"])
        if not 0 <= feature < n_features:
            raise InvalidValue(
                f"{path} visualises feature {feature}; the statistics have {n_features} features"
            )
        files = [_png(folder, name) for name in target["images"]]
        out[feature] = {
            "kind": kind,
            "files": files,
            "objective": [round(float(v), 4) for v in target.get("objective", [])],
            "ratio": [None if v is None else round(float(v), 4) for v in target.get("ratio", [])],
        }
    return out


def _png(folder: Path, name: Any) -> Path:
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise InvalidValue(
            f"{folder / FEATUREVIZ_JSON} names the image {name!r}: expected a file name in images/"
        )
    path = folder / "images" / name
    if not path.is_file():
        raise MissingFile(f"{path} is missing: rerun `vitsae visualize`")
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise InvalidValue(f"{path} is {image.format}, not a PNG image")
    except (UnidentifiedImageError, OSError) as err:
        raise InvalidValue(f"{path} is not an image ({err}): rerun `vitsae visualize`") from err
    return path


def _circuit_row(row: Any) -> list[Any]:
    """[kind, hook, feature or None, attribution, ablation or None] of one upstream or downstream node."""
    feature = row.get("feature")
    ablation = row.get("ablation")
    return [
        str(row["kind"]),
        str(row["hook"]),
        None if feature is None else int(feature),
        round(float(row["attribution"]), 4),
        None if ablation is None else round(float(ablation), 4),
    ]


def read_circuit(folder: str | Path, hook: str, n_features: int) -> dict[str, Any]:
    """The features of the SAE at `hook` in a `vitsae trace` folder's `features.json`:
    {"target": label, "hook": hook, "features": {feature: {"upstream": rows, "downstream": rows}}}, rows as
    `_circuit_row`, largest |attribution| first."""
    path = Path(folder) / CIRCUIT_JSON
    if not path.is_file():
        raise MissingFile(f"no {CIRCUIT_JSON} in {folder}: not a `vitsae trace` output folder")
    info = check_format(path, read_json(path), "vitsae.circuit_features", 1, fix="rerun `vitsae trace`")
    saes = info.get("saes", {})
    if hook not in saes:
        raise InvalidValue(
            f"{path} traces the SAEs at {sorted(saes)}; these statistics are of hook {hook!r}: "
            "pass a trace that includes this SAE"
        )
    try:
        features = {
            int(key): {
                side: [_circuit_row(row) for row in entry.get(side, [])[:CIRCUIT_ROWS]]
                for side in ("upstream", "downstream")
            }
            for key, entry in saes[hook]["features"].items()
        }
        target = str(info["target"]["label"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InvalidValue(f"{path} is damaged ({type(err).__name__}: {err}): rerun `vitsae trace`") from err
    outside = [f for f in features if not 0 <= f < n_features]
    if outside:
        raise InvalidValue(f"{path} lists feature {outside[0]}; the statistics have {n_features} features")
    return {"target": target, "hook": hook, "features": features}
