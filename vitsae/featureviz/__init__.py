"""Feature visualisation: optimise an image that makes a feature, neuron, direction or class fire.

`visualize_targets(cfg, model, sae)` is the stage (`vitsae visualize`); `optimize` and the objectives and
parametrisations are the Python API, returning tensors for notebooks. See docs/featureviz.md.
"""

from vitsae.featureviz.augment import Augment, to_model_input
from vitsae.featureviz.config import VisualizeConfig
from vitsae.featureviz.objectives import (
    ClassLogit,
    Direction,
    DistributionMatch,
    Neuron,
    SAEFeature,
    Site,
    Weighted,
    combine,
)
from vitsae.featureviz.optimize import Penalties, Visualization, evaluate, optimize
from vitsae.featureviz.params import FourierImage, ImageStatistics, MacoImage, PixelImage
from vitsae.featureviz.run import visualize_targets

__all__ = [
    "Augment",
    "ClassLogit",
    "Direction",
    "DistributionMatch",
    "FourierImage",
    "ImageStatistics",
    "MacoImage",
    "Neuron",
    "Penalties",
    "PixelImage",
    "SAEFeature",
    "Site",
    "VisualizeConfig",
    "Visualization",
    "Weighted",
    "combine",
    "evaluate",
    "optimize",
    "to_model_input",
    "visualize_targets",
]
