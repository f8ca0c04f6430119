"""Which model an SAE was trained on, checked against the store or model it is paired with.

An SAE records its model's spec and weights hash (`SAEConfig.model_spec`, `model_weights_hash`, copied from
the store's manifest when it is trained); a store records its own. Two different models of the same width
give activations an SAE silently misreads, so a mismatch is refused naming both, unless the user passes
`--allow-other-model` (`allow=True`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitsae.errors import InvalidValue
from vitsae.sae.config import SAEConfig

if TYPE_CHECKING:
    from vitsae.models.protocol import HookedModel

ALLOW_HELP = "use an SAE with activations of another model than the one it was trained on (same width)"


class ModelMismatch(InvalidValue):
    """The SAE was trained on another model's activations than those it is given."""


def _describe(spec: str, weights_hash: str) -> str:
    digest = f" (weights sha256 {weights_hash[:12]}...)" if weights_hash else ""
    return f"{spec or 'an unrecorded model'!r}{digest}"


def check_same_model(
    sae_cfg: SAEConfig, sae_where: str, spec: str, weights_hash: str, other_where: str, allow: bool = False
) -> None:
    """Refuse when the SAE at `sae_where` was trained on another model than `spec`/`weights_hash` (what
    `other_where`, a store or a loaded model, holds). Weights hashes decide when both are recorded, else the
    spec strings when both are; with nothing to compare, nothing is refused."""
    if allow:
        return
    if sae_cfg.model_weights_hash and weights_hash:
        same = sae_cfg.model_weights_hash == weights_hash
    elif sae_cfg.model_spec and spec:
        same = sae_cfg.model_spec == spec
    else:
        return
    if not same:
        trained_on = _describe(sae_cfg.model_spec, sae_cfg.model_weights_hash)
        raise ModelMismatch(
            f"the SAE {sae_where} was trained on {trained_on}, but {other_where} holds "
            f"{_describe(spec, weights_hash)}: an SAE trained on another model's activations misreads them; "
            "use an SAE trained on that model, or pass --allow-other-model if you mean it"
        )


def check_sae_model(
    saes: dict[str, SAEConfig], model: HookedModel, model_spec: str, allow: bool = False
) -> None:
    """`check_same_model` for SAEs (by folder) run inside a loaded `model`: weights hashes only, since the
    user may name one model by several specs."""
    if allow or not any(cfg.model_weights_hash for cfg in saes.values()):
        return
    weights_hash = model.weights_hash()
    for where, cfg in saes.items():
        check_same_model(cfg, where, "", weights_hash, f"the model {model_spec}")
