"""Circuits: which features of one SAE build the features of the next, and the prediction.

One edge quantity, three estimators: virtual weights read off the SAEs (and a convolution between two
CNN hooks) in `weights.py`, attribution a_i * d(target)/d(a_i) with the SAEs spliced in with their error
terms in `attribute.py` (integrated gradients with `steps`), and exact ablation in `ablate.py`. `graph.py`
builds the sparse layered graph, `prune.py` its faithfulness curve, `page.py` and `picture.py` draw it,
`vitsae trace` (cli.py) runs it all; docs/circuits.md describes the files.
"""

from vitsae.circuits.target import CircuitError, Target

__all__ = ["CircuitError", "Target"]
