"""The SAEs of a circuit as columns in forward order, checked against the model before any work."""

from __future__ import annotations

from dataclasses import dataclass

from vitsae.circuits.target import CircuitError
from vitsae.edit.splice import SpliceSite


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


def make_columns(model, sites: list[SpliceSite], paths: list[str]) -> list[Column]:
    """The sites as columns; refuses a hook the model lacks, two SAEs at one hook and SAEs given out of
    forward order (the caller checks first that each SAE was trained on this model: `check_sae_model`)."""
    names = model.hook_names()
    columns: list[Column] = []
    for site, path in zip(sites, paths, strict=True):
        hook = site.hook_name or site.sae.cfg.hook_name
        if hook not in names:
            raise CircuitError(f"--sae {path}: the model has no hook {hook!r} (the SAE's hook)")
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
