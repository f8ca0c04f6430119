"""Is an attribution map faithful? Perturbation curves, ground truth and the model-randomisation check.

- Deletion and insertion curves (Petsiuk, Das and Saenko 2018): pixels are removed from the image (or
  added to a substrate) in order of decreasing attribution, and the target is scored after each step. The
  AUC is the trapezoid area over the removed fraction in [0, 1]: low for deletion and high for insertion
  mean the map ranks the pixels that matter first. Substrates are those of `attribution.substrates`.
- AOPC (Samek et al. 2017) of the deletion order: the mean over steps k = 0..L of f(x) - f(x_k).
- Patch-level curves for a HookedViT: whole patch tokens are dropped from the sequence (after the
  position embeddings, at `blocks.0.hook_resid_pre`), so the model sees no edited pixels at all, only fewer
  patches. The sequence never empties: deletion runs to P - 1 removed patches, insertion from 1 patch.
- Ground truth on the shapes set: the pointing game (is the map's maximum on the object?) and the share of
  the map's positive mass inside the object's mask.
- The cascading model-randomisation check (Adebayo et al. 2018): layers are re-drawn at random from the
  output down (in place; `cascade` restores them), and each method's maps on the randomised model are
  compared with the original ones by Spearman rank correlation (of |map|) and SSIM (of |map| scaled to
  [0, 1]).

All functions take a score function `score(pixels_BCHW, classes_B) -> (B,)` (an
`attribution.TargetFunction`), so the same curves serve class logits, probabilities and SAE features.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from vitsae.errors import InvalidValue, VitsaeError
from vitsae.models.protocol import HookedModel
from vitsae.models.vit import HookedViT

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DROP_HOOK = "blocks.0.hook_resid_pre"
_HEAD = ("pooler_W", "pooler_b", "W_U", "b_U")  # HookedViT's top-level head parameters
_BEFORE_DROP = ("hook_embed", "hook_pos_embed", "ln_pre.hook_normalized")


def removal_counts(n_items: int, steps: int) -> list[int]:
    """How many items are removed after each of `steps` equal steps: 0, ..., n_items."""
    return [round(k * n_items / steps) for k in range(steps + 1)]


def ranks(maps_BN: torch.Tensor) -> torch.Tensor:
    """Per row, each item's position in decreasing order of value (0 = the largest; ties by index)."""
    order = torch.argsort(-maps_BN, dim=1, stable=True)
    ranks_BN = torch.empty_like(order)
    ranks_BN.scatter_(1, order, torch.arange(maps_BN.shape[1]).expand_as(order).contiguous())
    return ranks_BN


@torch.no_grad()
def _score_chunks(score: Score, pixels: torch.Tensor, classes: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [
            score(pixels[i : i + batch_size], classes[i : i + batch_size]).float()
            for i in range(0, len(pixels), batch_size)
        ]
    )


@torch.no_grad()
def pixel_curves(
    score: Score,
    pixels_BCHW: torch.Tensor,
    classes_B: torch.Tensor,
    maps_BHW: torch.Tensor,
    substrate_BCHW: torch.Tensor,
    steps: int,
    batch_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion and insertion scores (B, steps + 1) after 0, 1/steps, ..., all pixels are moved."""
    batch, _, height, width = pixels_BCHW.shape
    ranks_BN = ranks(maps_BHW.reshape(batch, -1).to(pixels_BCHW.device)).view(batch, 1, height, width)
    counts = removal_counts(height * width, steps)
    curves = []
    for insert in (False, True):
        images = []
        for count in counts:
            moved_B1HW = ranks_BN < count
            if insert:
                images.append(torch.where(moved_B1HW, pixels_BCHW, substrate_BCHW))
            else:
                images.append(torch.where(moved_B1HW, substrate_BCHW, pixels_BCHW))
        stacked = torch.stack(images, dim=1).flatten(0, 1)  # image-major: (B * (steps + 1), C, H, W)
        repeated = classes_B.repeat_interleave(len(counts))
        curves.append(_score_chunks(score, stacked, repeated, batch_size).view(batch, len(counts)))
    return curves[0], curves[1]


def patch_maps(maps_BHW: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Each patch's mean attribution, (B, h*w) row-major."""
    return F.adaptive_avg_pool2d(maps_BHW.unsqueeze(1), grid_hw).flatten(1)


def check_patch_level(model: HookedModel, target_hook: str, one_patch: bool) -> None:
    """Patch dropping needs a HookedViT and a target read after the first block's input, summed over
    whatever patches remain."""
    if not isinstance(model, HookedViT):
        raise VitsaeError(
            f"patch-level curves drop ViT patch tokens; a {type(model).__name__} has none "
            "(use the pixel substrates)"
        )
    if target_hook in _BEFORE_DROP:
        raise VitsaeError(
            f"patch-level curves drop tokens at {DROP_HOOK}; target hook {target_hook!r} is read before it"
        )
    if one_patch:
        raise VitsaeError("patch-level curves drop patches, so the target cannot be one patch's (@row,col)")


@torch.no_grad()
def patch_curves(
    score: Score,
    model: HookedViT,
    pixels_BCHW: torch.Tensor,
    classes_B: torch.Tensor,
    maps_BHW: torch.Tensor,
    steps: int,
    batch_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Deletion and insertion scores (B, S) by dropping patch tokens, and the patch fractions removed.

    Deletion drops the top 0..P-1 patches; insertion keeps the top 1..P (the sequence never empties).
    """
    layout = model.token_layout(DROP_HOOK, tuple(pixels_BCHW.shape[-2:]))
    n_patches = layout.grid_hw[0] * layout.grid_hw[1]
    order_BP = torch.argsort(-patch_maps(maps_BHW, layout.grid_hw), dim=1, stable=True)
    counts = sorted({min(max(c, 1), n_patches - 1) for c in removal_counts(n_patches, steps)})
    kept: list[torch.Tensor] = []

    def keep_patches(resid_BTD: torch.Tensor, hook: object) -> torch.Tensor:
        index_BK = kept[0].to(resid_BTD.device)
        patches = resid_BTD[:, layout.n_prefix :].gather(
            1, index_BK.unsqueeze(-1).expand(-1, -1, resid_BTD.shape[-1])
        )
        return torch.cat([resid_BTD[:, : layout.n_prefix], patches], dim=1)

    def run(keep_BK: torch.Tensor) -> torch.Tensor:
        kept[:] = [keep_BK]
        with model.hooks(fwd_hooks=[(DROP_HOOK, keep_patches)]):
            return score(pixels_BCHW, classes_B).float()

    deletion = [run(torch.sort(order_BP[:, c:], dim=1).values) for c in [0, *counts]]
    insertion = [run(torch.sort(order_BP[:, :c], dim=1).values) for c in [*counts, n_patches]]
    fractions = [c / n_patches for c in [0, *counts]]
    return torch.stack(deletion, dim=1), torch.stack(insertion, dim=1), fractions


def auc(curves_BS: torch.Tensor, fractions: list[float] | None = None) -> torch.Tensor:
    """Trapezoid area under each curve over the fraction moved (evenly spaced in [0, 1] by default)."""
    steps = curves_BS.shape[1]
    x = torch.tensor(fractions if fractions is not None else np.linspace(0, 1, steps), dtype=torch.float64)
    return torch.trapezoid(curves_BS.double(), x, dim=1) / float(x[-1] - x[0])


def aopc(deletion_BS: torch.Tensor) -> torch.Tensor:
    """Samek et al.'s AOPC per image: the mean over steps of f(x) - f(x_k) along the deletion curve."""
    return (deletion_BS[:, :1] - deletion_BS).mean(dim=1)


def positive_mass(maps_BHW: torch.Tensor) -> torch.Tensor:
    """The evidence a map puts on each pixel: its positive part, after shifting maps with no negative value
    to start at zero (RISE's constant offset would otherwise spread mass everywhere)."""
    flat = maps_BHW.flatten(1)
    non_negative = (flat.min(dim=1).values >= 0).view(-1, 1, 1)
    shifted = maps_BHW - flat.min(dim=1).values.view(-1, 1, 1)
    return torch.where(non_negative, shifted, maps_BHW).clamp_min(0)


def pointing_game(maps_BHW: torch.Tensor, masks_BHW: torch.Tensor) -> torch.Tensor:
    """1.0 where the map's maximum lies inside the mask (the first maximum in row-major order), else 0.0."""
    flat = maps_BHW.flatten(1)
    hit = masks_BHW.flatten(1).gather(1, flat.argmax(dim=1, keepdim=True))
    return hit.squeeze(1).float()


def mass_inside(maps_BHW: torch.Tensor, masks_BHW: torch.Tensor) -> torch.Tensor:
    """The share of each map's positive mass (see `positive_mass`) inside the mask; 0 for an empty map."""
    mass = positive_mass(maps_BHW).flatten(1).double()
    inside = (mass * masks_BHW.flatten(1)).sum(dim=1)
    return (inside / mass.sum(dim=1).clamp_min(1e-300)).float()


# -- the model-randomisation check ----------------------------------------------------------------------


def layer_groups(model: torch.nn.Module) -> list[tuple[str, list[str]]]:
    """The model's parameters grouped into layers, from the input to the output.

    Past the path every parameter shares (a wrapper's `model.`), a group is the name up to its first
    numbered part (`blocks.3`, `resnet.encoder.stages.2`) or else the module path cut to two parts
    (`ln_final`, `resnet.embedder`); top-level parameters next to each other (`W_U`, `b_U`) form one group.
    Groups follow the order of registration, which is the forward order for HookedViT (head moved last)
    and for the usual `nn.Module`s.
    """
    names = [name for name, _ in model.named_parameters()]
    # a HookedViT registers its head's top-level parameters before its modules; the head runs last
    names = [n for n in names if n not in _HEAD] + [n for n in names if n in _HEAD]
    shared = 0
    while len({tuple(n.split(".")[: shared + 1]) for n in names}) == 1 and all(
        n.count(".") > shared for n in names
    ):
        shared += 1
    groups: list[tuple[str, list[str]]] = []
    for name in names:
        parts = name.split(".")[shared:]
        numbered = next((i for i, part in enumerate(parts[:-1]) if part.isdigit()), None)
        if numbered is not None:
            key = ".".join(parts[: numbered + 1])
        elif len(parts) > 1:
            key = ".".join(parts[:-1][:2])
        else:
            key = "+"
        if groups and groups[-1][0] == key:
            groups[-1][1].append(name)
        else:
            groups.append((key, [name]))
    return [
        ("+".join(n.split(".")[-1] for n in params) if key == "+" else key, params) for key, params in groups
    ]


@torch.no_grad()
def randomise_(model: torch.nn.Module, names: list[str], generator: torch.Generator) -> None:
    """Re-draw the named parameters from a normal with each tensor's own mean and standard deviation
    (0.02 where a tensor is constant), in place."""
    params = dict(model.named_parameters())
    for name in names:
        param = params[name]
        std = float(param.float().std()) if param.numel() > 1 else 0.0
        std = std if std > 0 and math.isfinite(std) else 0.02
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
        param.copy_((noise * std + float(param.float().mean())).to(param.dtype))


def cascade(model: torch.nn.Module, seed: int = 0) -> Iterator[str]:
    """Randomise the model's layers in place, cumulatively from the output down, yielding each layer's name
    once it is randomised; the original weights come back when the loop ends or is left."""
    saved = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    try:
        for name, params in reversed(layer_groups(model)):
            randomise_(model, params, generator)
            yield name
    finally:
        model.load_state_dict(saved)


def average_ranks(values_BN: torch.Tensor) -> torch.Tensor:
    """Per row, the rank of each value (1-based), ties sharing the mean of their ranks (as scipy)."""
    out = torch.empty_like(values_BN, dtype=torch.float64)
    for row, values in enumerate(values_BN):
        sorted_values, order = torch.sort(values, stable=True)
        _, counts = torch.unique_consecutive(sorted_values, return_counts=True)
        ends = torch.cumsum(counts, 0).double()
        mean_rank = ends - (counts.double() - 1) / 2
        out[row, order] = torch.repeat_interleave(mean_rank, counts)
    return out


def spearman(a_BN: torch.Tensor, b_BN: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row (ties by average rank); 0 where a row is constant."""
    ra, rb = average_ranks(a_BN.double()), average_ranks(b_BN.double())
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    denominator = (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-300)
    return ((ra * rb).sum(dim=1) / denominator).float()


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    window = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return window / window.sum()


def ssim(a_BHW: torch.Tensor, b_BHW: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity per image (Wang et al. 2004): Gaussian window sigma 1.5 (11 px), K1 0.01,
    K2 0.03, population covariances, averaged over the positions where the window fits (as scikit-image's
    `structural_similarity(gaussian_weights=True, use_sample_covariance=False)`)."""
    window = _gaussian_window().to(a_BHW.device)
    size = len(window)
    if min(a_BHW.shape[-2:]) < size:
        raise InvalidValue(f"SSIM needs maps of at least {size}x{size} pixels, got {tuple(a_BHW.shape[-2:])}")

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x.unsqueeze(1), window.view(1, 1, 1, -1))
        return F.conv2d(x, window.view(1, 1, -1, 1)).squeeze(1)

    a, b = a_BHW.double(), b_BHW.double()
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (numerator / denominator).mean(dim=(1, 2)).float()


def unit_scaled(maps_BHW: torch.Tensor) -> torch.Tensor:
    """|map| scaled to [0, 1] per image (zero maps stay zero)."""
    mag = maps_BHW.abs()
    peak = mag.flatten(1).max(dim=1).values.clamp_min(1e-30).view(-1, 1, 1)
    return mag / peak


def similarity(original_BHW: torch.Tensor, other_BHW: torch.Tensor) -> dict[str, torch.Tensor]:
    """Spearman of |map| and SSIM of |map| in [0, 1], per image."""
    return {
        "spearman": spearman(original_BHW.abs().flatten(1), other_BHW.abs().flatten(1)),
        "ssim": ssim(unit_scaled(original_BHW), unit_scaled(other_BHW)),
    }
