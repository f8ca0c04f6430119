"""Interventions on a model through its SAE features: splice SAEs in, edit feature activations, measure.

`spliced(model, sites, error_term=, edits=)` (splice.py) replaces a hook's activations by SAE
reconstructions for a block; `FeatureEdit` (edits.py) describes ablate/clamp/scale/steer/patch edits;
`measure_edit` (measure.py) and `explain` (finder.py) run them over an image source.
"""

from vitsae.edit.edits import EditError, FeatureEdit, Where
from vitsae.edit.splice import SAE_HOOKS, Splice, SpliceError, SpliceSite, spliced, trained_kinds

__all__ = [
    "SAE_HOOKS",
    "EditError",
    "FeatureEdit",
    "Splice",
    "SpliceError",
    "SpliceSite",
    "Where",
    "spliced",
    "trained_kinds",
]
