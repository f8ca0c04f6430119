"""Attribution heatmaps: which pixels drive a class, an SAE feature or a unit (Captum plus RISE and the
token-grid glue for ViTs). Imports models, sae and data only."""

from vitsae.attribution.config import METHODS, AttributeConfig, MethodConfig
from vitsae.attribution.grid import grid_view, spatial_hooks
from vitsae.attribution.methods import Attribution, attribute
from vitsae.attribution.rise import rise
from vitsae.attribution.substrates import SUBSTRATES, substrate
from vitsae.attribution.targets import Target, TargetError, TargetFunction

__all__ = [
    "METHODS",
    "SUBSTRATES",
    "AttributeConfig",
    "Attribution",
    "MethodConfig",
    "Target",
    "TargetError",
    "TargetFunction",
    "attribute",
    "grid_view",
    "rise",
    "spatial_hooks",
    "substrate",
]
