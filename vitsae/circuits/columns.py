"""The SAEs of a circuit as columns in forward order, checked against the model before any work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vitsae.circuits.target import CircuitError
from vitsae.edit.splice import SpliceSite
from vitsae.fileio import read_json


@dataclass
class Column:
    """One SAE site of the graph: its hook, position among the model's hooks and folder (for provenance)."""

    hook: str
    site: SpliceSite
    path: str
    position: int

    @property
    def n_features(self) -> int:
        return self.site.sae.cfg.d_sae


def trained_model_hash(site: SpliceSite) -> str | None:
    """The weights hash of the model whose activations the SAE was trained on (its store's manifest)."""
    store = site.sae.cfg.store
    manifest = Path(store) / "manifest.json" if store else None
    if manifest is None or not manifest.is_file():
        return None
    return read_json(manifest).get("model", {}).get("weights_hash")


def make_columns(model, sites: list[SpliceSite], paths: list[str]) -> list[Column]:
    """The sites as columns; refuses a hook the model lacks, two SAEs at one hook, SAEs given out of
    forward order, and an SAE trained on another model's activations."""
    names = model.hook_names()
    model_hash = model.weights_hash()
    columns: list[Column] = []
    for site, path in zip(sites, paths, strict=True):
        hook = site.hook_name or site.sae.cfg.hook_name
        if hook not in names:
            raise CircuitError(f"--sae {path}: the model has no hook {hook!r} (the SAE's hook)")
        trained = trained_model_hash(site)
        if trained and trained != model_hash:
            raise CircuitError(
                f"--sae {path} was trained on another model's activations (weights {trained[:12]}, "
                f"model {site.sae.cfg.model_spec or '?'}), not this --model's (weights {model_hash[:12]})"
            )
        column = Column(hook, site, path, names.index(hook))
        for other in columns:
            if other.hook == hook:
                raise CircuitError(f"two SAEs at the same hook {hook!r}: --sae {other.path} and --sae {path}")
            if other.position > column.position:
                raise CircuitError(
                    f"SAEs not in forward order: --sae {path} ({hook}) runs before --sae {other.path} "
                    f"({other.hook}); give --sae in the order the model runs them"
                )
        columns.append(column)
    return columns
