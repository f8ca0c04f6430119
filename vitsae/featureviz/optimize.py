"""The optimisation loop: raise an objective by changing an image parametrisation, one batch at a time.

Batch element `b` optimises target `assignment[b]` of the objective, so many features share one forward
and backward pass (the model runs in eval mode, so elements do not interact except through the optional
diversity term, which only couples elements of the same target). Everything is seeded: on the CPU the same
call gives the same images bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vitsae.featureviz.augment import Augment, to_model_input
from vitsae.featureviz.objectives import Objective, diversity_B
from vitsae.featureviz.params import ImageParam, MacoImage
from vitsae.tokens import TokenLayout


@dataclass(frozen=True)
class Penalties:
    """Regularisers added to the loss: pixel total variation and L2 (around grey), and batch diversity."""

    tv: float = 0.0
    l2: float = 0.0
    diversity: float = 0.0
    diversity_hook: str = ""


@dataclass
class Visualization:
    """What one optimisation returns: images, the objective per step, and MACO's attribution maps."""

    images_B3HW: torch.Tensor  # in [0, 1]
    curve_SB: torch.Tensor  # optimised objective of each element at each step (surrogate units)
    attribution_BHW: torch.Tensor | None  # accumulated |d objective / d image|, scaled to [0, 1]


def total_variation_B(images_B3HW: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, per image."""
    dy = (images_B3HW[..., 1:, :] - images_B3HW[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    dx = (images_B3HW[..., :, 1:] - images_B3HW[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    return dx + dy


def layouts_for(model, hooks: Sequence[str]) -> dict[str, TokenLayout]:
    """Each hook's token layout at the model's input size."""
    model.check_hook_names(list(hooks))
    return {hook: model.token_layout(hook, tuple(model.preprocess.size)) for hook in hooks}


def optimize(
    model,
    objective: Objective,
    assignment: Sequence[int],
    param: ImageParam,
    steps: int,
    lr: float,
    augment: Augment,
    generator: torch.Generator,
    penalties: Penalties = Penalties(),
    group_size: int = 1,
    on_step: Callable[[int], None] | None = None,
) -> Visualization:
    """Maximise `objective` target `assignment[b]` on element `b` of `param` for `steps` Adam steps.

    `group_size` consecutive elements share a target (for the diversity term). Attribution maps are
    accumulated for MACO images, as in Fel et al. 2023: the mean absolute gradient of the objective with
    respect to the (un-augmented) image over the optimisation shows where the objective comes from.
    """
    if len(assignment) != param.batch:
        raise ValueError(f"{len(assignment)} target assignments for a batch of {param.batch}")
    hooks = list(objective.hooks())
    if penalties.diversity and penalties.diversity_hook not in hooks:
        hooks.append(penalties.diversity_hook)
    layouts = layouts_for(model, hooks)
    columns = torch.tensor(list(assignment))
    rows = torch.arange(param.batch)
    optimiser = torch.optim.Adam(param.parameters(), lr=lr)
    curve = []
    attribution = torch.zeros(param.batch, *param.size) if isinstance(param, MacoImage) else None
    for step in range(steps):
        optimiser.zero_grad(set_to_none=True)
        images = param()
        images.retain_grad()
        inputs = to_model_input(augment(images, generator), model.preprocess)
        acts = model.capture(inputs, hooks)
        value_B = objective.values(acts, layouts, surrogate=True)[rows, columns]
        loss = -value_B.sum()
        if penalties.tv:
            loss = loss + penalties.tv * total_variation_B(images).sum()
        if penalties.l2:
            loss = loss + penalties.l2 * (images - 0.5).pow(2).mean(dim=(1, 2, 3)).sum()
        if penalties.diversity:
            loss = loss - penalties.diversity * diversity_B(acts[penalties.diversity_hook], group_size).sum()
        loss.backward()
        if attribution is not None:
            attribution += images.grad.abs().mean(1)
        optimiser.step()
        curve.append(value_B.detach())
        if on_step is not None:
            on_step(step)
    with torch.no_grad():
        final = param()
    if attribution is not None:
        attribution /= attribution.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return Visualization(final, torch.stack(curve), attribution)


@torch.no_grad()
def evaluate(model, objective: Objective, images_B3HW: torch.Tensor, surrogate: bool = False) -> torch.Tensor:
    """(B, N) values of every target on images in [0, 1], without augmentation."""
    layouts = layouts_for(model, objective.hooks())
    acts = model.collect(to_model_input(images_B3HW, model.preprocess), list(objective.hooks()))
    return objective.values(acts, layouts, surrogate=surrogate)
