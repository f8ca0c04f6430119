"""Attribution methods: one call, `attribute`, returns a heatmap per image at the image's resolution.

Captum does the work where it has the method (saliency, gradient x input, integrated gradients, SmoothGrad
via its NoiseTunnel, Grad-CAM, occlusion): those are the reference implementations people compare against,
and re-deriving them would only add bugs. vitsae adds what Captum lacks: RISE (`rise.py`), the token-grid
view that lets Grad-CAM read ViT tokens (`grid.py`), the targets (`targets.py`) and the fills
(`substrates.py`).

Channels are reduced to one map per image: saliency takes the largest |gradient| over channels (Simonyan
et al. 2014); gradient x input and integrated gradients sum over channels, keeping the sign (so integrated
gradients' maps sum to f(x) - f(baseline)); occlusion's channels are equal and averaged; Grad-CAM is
rectified and upsampled bilinearly from its hook's grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from vitsae.attribution.config import MethodConfig, check_method
from vitsae.attribution.grid import check_spatial_hook, grid_view, spatial_hooks
from vitsae.attribution.rise import rise
from vitsae.attribution.substrates import substrate
from vitsae.attribution.targets import TargetError, TargetFunction
from vitsae.models.vit import HookedViT


@dataclass
class Attribution:
    """Heatmaps (B, H, W) of one method, and integrated gradients' completeness error per image."""

    maps_BHW: torch.Tensor
    delta_B: torch.Tensor | None = None


def gradcam_hook(fn: TargetFunction, cfg: MethodConfig) -> str:
    """The Grad-CAM hook: the configured one, else the last hook with a patch grid up to the target's."""
    model = fn.model
    if cfg.gradcam_hook:
        check_spatial_hook(model, cfg.gradcam_hook, fn.image_hw)
        order = model.hook_names()
        if order.index(cfg.gradcam_hook) > order.index(fn.hook):
            raise TargetError(
                f"Grad-CAM hook {cfg.gradcam_hook!r} runs after the target's hook {fn.hook!r}, so the target "
                "does not depend on it; pick a hook before it"
            )
        return cfg.gradcam_hook
    order = model.hook_names()
    reachable = set(order[: order.index(fn.hook) + 1])
    candidates = [name for name in spatial_hooks(model, fn.image_hw) if name in reachable]
    if not candidates:
        raise TargetError(f"no hook with a patch grid runs before the target's hook {fn.hook!r}")
    return candidates[-1]


def occlusion_window(fn: TargetFunction, cfg: MethodConfig) -> int:
    """The occlusion window: configured, else the ViT's patch size, else 8 pixels."""
    if cfg.occlusion_window:
        return cfg.occlusion_window
    return fn.model.cfg.patch_size if isinstance(fn.model, HookedViT) else 8


def attribute(
    fn: TargetFunction,
    method: str,
    pixels_BCHW: torch.Tensor,
    classes_B: torch.Tensor,
    cfg: MethodConfig,
) -> Attribution:
    """Heatmaps of `fn`'s target for `method` (see `METHODS`) on normalised `pixels_BCHW`."""
    check_method(method)
    if tuple(pixels_BCHW.shape[-2:]) != fn.image_hw:
        raise TargetError(
            f"images are {tuple(pixels_BCHW.shape[-2:])}, but the target was set up for {fn.image_hw}"
        )
    smooth = method.startswith("smoothgrad:")
    base = method.removeprefix("smoothgrad:")
    generator = torch.Generator().manual_seed(cfg.seed)
    baseline_BCHW = substrate(cfg.baseline, pixels_BCHW.detach(), fn.model.preprocess, generator)
    # gradient methods differentiate with respect to the pixels (Captum warns when asked to switch this on)
    pixels_BCHW = pixels_BCHW.detach().requires_grad_(base not in ("occlusion", "rise"))
    if base == "rise":
        maps = rise(
            fn,
            pixels_BCHW,
            classes_B,
            baseline_BCHW,
            cfg.rise_masks,
            cfg.rise_cells,
            cfg.rise_keep,
            cfg.perturbation_batch_size,
            generator,
        )
        return Attribution(maps.detach())
    if base == "occlusion":
        window = occlusion_window(fn, cfg)
        attr = Occlusion(fn).attribute(
            pixels_BCHW,
            sliding_window_shapes=(pixels_BCHW.shape[1], window, window),
            strides=(pixels_BCHW.shape[1], window, window),
            baselines=baseline_BCHW,
            additional_forward_args=(classes_B,),
            perturbations_per_eval=max(1, cfg.perturbation_batch_size // pixels_BCHW.shape[0]),
        )
        return Attribution(attr.mean(dim=1).detach())
    if base == "gradcam":
        hook = gradcam_hook(fn, cfg)
        with grid_view(fn.model, hook, fn.image_hw) as view:
            layer_method = LayerGradCam(fn, view)
            kwargs = {"additional_forward_args": (classes_B,), "relu_attributions": True}
            attr = _maybe_smoothed(layer_method, smooth, pixels_BCHW, cfg, kwargs)
        maps = LayerAttribution.interpolate(attr, fn.image_hw, interpolate_mode="bilinear")
        return Attribution(maps[:, 0].detach())
    kwargs = {"additional_forward_args": (classes_B,)}
    if base == "saliency":
        attr = _maybe_smoothed(Saliency(fn), smooth, pixels_BCHW, cfg, {**kwargs, "abs": True})
        return Attribution(attr.amax(dim=1).detach())
    if base == "gradxinput":
        attr = _maybe_smoothed(InputXGradient(fn), smooth, pixels_BCHW, cfg, kwargs)
        return Attribution(attr.sum(dim=1).detach())
    ig_kwargs = {
        **kwargs,
        "baselines": baseline_BCHW,
        "n_steps": cfg.ig_steps,
        "internal_batch_size": cfg.ig_internal_batch_size,
    }
    if smooth:
        attr = _maybe_smoothed(IntegratedGradients(fn), True, pixels_BCHW, cfg, ig_kwargs)
        return Attribution(attr.sum(dim=1).detach())
    attr, delta = IntegratedGradients(fn).attribute(pixels_BCHW, return_convergence_delta=True, **ig_kwargs)
    return Attribution(attr.sum(dim=1).detach(), delta.detach())


def _maybe_smoothed(method, smooth: bool, pixels_BCHW: torch.Tensor, cfg: MethodConfig, kwargs: dict):
    """`method.attribute(pixels, **kwargs)`, averaged over noisy copies of the input when `smooth`."""
    if not smooth:
        return method.attribute(pixels_BCHW, **kwargs)
    spread = float(pixels_BCHW.detach().max() - pixels_BCHW.detach().min())
    with torch.random.fork_rng(devices=[]):  # NoiseTunnel draws from the global generator
        torch.manual_seed(cfg.seed)
        return NoiseTunnel(method).attribute(
            pixels_BCHW,
            nt_type="smoothgrad",
            nt_samples=cfg.smoothgrad_samples,
            nt_samples_batch_size=max(1, min(cfg.smoothgrad_samples, 64 // pixels_BCHW.shape[0])),
            stdevs=cfg.smoothgrad_noise * spread,
            **kwargs,
        )
