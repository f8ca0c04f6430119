"""A randomly re-initialised copy of a model: the same architecture with its weights redrawn.

The sanity check of Adebayo et al. (2018): an interpretability method whose results survive redrawing the
weights measures the architecture or the data, not what the model learned. `random:<spec>` (see
`vitsae.models.load`) names such a copy, so harvest, train and dissect can all run on it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from vitsae.errors import InvalidValue
from vitsae.models.vit import HookedViT
from vitsae.models.wrap import HookedModule


@torch.no_grad()
def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` with every parameter redrawn from its from-scratch initialisation, seeded.

    A `HookedViT` uses its own `init_weights`; any other model re-runs `reset_parameters` of every module
    that has one (convolutions, linear layers and norms, whose running statistics reset too). A parameter
    that no module resets keeps its value, so such a model is refused, naming the parameters.
    """
    if isinstance(model, HookedModule):
        inner = copy.deepcopy(model.model)
        for module in inner.modules():  # the copied forward hooks still feed the original's hook points
            module._forward_hooks.clear()
        inner = randomized(inner, seed)
        config = {**model.config, "randomized_seed": seed}
        return HookedModule(inner, model.preprocess, hook_modules=list(model._site_paths), config=config)
    copied = copy.deepcopy(model)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if isinstance(copied, HookedViT):
            copied.init_weights()
            for module in copied.modules():
                if hasattr(module, "running_mean") and hasattr(module, "running_var"):
                    module.running_mean.zero_()
                    module.running_var.fill_(1.0)
            return copied
        before = {name: param.clone() for name, param in copied.named_parameters()}
        for module in copied.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and module is not copied:
                reset()
        kept = [
            name
            for name, param in copied.named_parameters()
            if param.numel() > 1 and torch.equal(param, before[name])
        ]
        kept = [name for name in kept if not _constant_init(before[name])]
        if kept:
            raise InvalidValue(
                f"cannot re-initialise parameters {kept[:5]}{' ...' if len(kept) > 5 else ''} of "
                f"{type(model).__name__}: no module of theirs has reset_parameters()"
            )
        return copied
    finally:
        torch.random.set_rng_state(generator_state)


def _constant_init(param: torch.Tensor) -> bool:
    """Ones or zeros (norm weights, biases): a reset draws the same values, so unchanged is correct."""
    return bool((param == param.flatten()[0]).all()) and float(param.flatten()[0]) in (0.0, 1.0)
