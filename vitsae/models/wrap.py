"""HookedModule: TransformerLens hook points on the named submodules of any nn.Module (CNNs, timm, your own).

Each hooked submodule's output passes through a HookPoint named after the module path (e.g.
`resnet.encoder.stages.2`), so `run_with_cache`, `run_with_hooks` and `names_filter` behave as on any
HookedRootModule, and a hook's return value replaces the module's output. The model's output (logits,
unwrapped from a transformers ModelOutput) passes through `hook_logits`.

Sites are found by one dry forward on a zero image: every submodule that runs exactly once and returns a
tensor. Modules called several times per forward (a shared ReLU) cannot be told apart and are left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from vitsae.data.preprocess import Preprocess
from vitsae.fileio import weights_hash
from vitsae.models.layout import as_tokens, check_names, from_tokens
from vitsae.models.protocol import HookNames
from vitsae.tokens import TokenLayout


class _StopForward(Exception):
    """Raised inside `collect` once every requested hook has fired, to skip the rest of the forward."""


def unwrap_output(out: Any) -> torch.Tensor:
    """The main tensor of a model's output: `logits`, else `pooler_output`, else the first tensor."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        for key in ("logits", "image_embeds", "pooler_output", "last_hidden_state"):
            if out.get(key) is not None:
                return out[key]
        out = tuple(out.values())
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"cannot find an output tensor in a {type(out).__name__}")


class HookedModule(HookNames, HookedRootModule):
    """Wrap `model` so the outputs of its submodules are TransformerLens hook points.

    `hook_modules` picks the submodule paths to hook (default: every submodule that runs once per forward
    and returns a tensor). `config` is recorded in `weights_hash`.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocess,
        hook_modules: list[str] | None = None,
        config: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.config = dict(config or {})
        self._shapes: dict[tuple[int, int], dict[str, tuple[int, ...]]] = {}
        once = [path for path in self.probe_shapes(tuple(preprocess.size)) if path != "hook_logits"]
        if hook_modules is None:
            paths = once
        else:
            check_names(hook_modules, once)
            paths = [p for p in once if p in set(hook_modules)]
        modules = dict(model.named_modules())
        self.sites = nn.ModuleList(HookPoint() for _ in paths)
        self.hook_logits = HookPoint()
        self._site_paths = paths
        self._handles = [
            modules[path].register_forward_hook(_through(hook_point))
            for path, hook_point in zip(paths, self.sites, strict=True)
        ]
        self.setup()

    def unwrap(self) -> nn.Module:
        """Take the hook points off the wrapped model and return it as it was (this wrapper stops working)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self.model

    def setup(self) -> None:
        """Name the hook points by module path (the wrapped model's own modules are left untouched)."""
        self.hook_dict = dict(zip(self._site_paths, self.sites, strict=True))
        self.hook_dict["hook_logits"] = self.hook_logits
        for name, hook_point in self.hook_dict.items():
            hook_point.name = name
        self.mod_dict = dict(self.hook_dict)

    @torch.no_grad()
    def probe_shapes(self, image_hw: tuple[int, int]) -> dict[str, tuple[int, ...]]:
        """Output shape of every submodule that runs once and returns a tensor, in call order (batch of 1).

        One forward on a zero image of `image_hw`, in eval mode (batch-norm statistics stay untouched).
        """
        if image_hw in self._shapes:
            return self._shapes[image_hw]
        calls: dict[str, int] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        handles = []
        for path, module in self.model.named_modules():
            if path:
                handles.append(module.register_forward_hook(_recorder(path, calls, shapes)))
        param = next(self.model.parameters(), None)
        pixels = torch.zeros(1, 3, *image_hw, device=param.device if param is not None else None)
        if param is not None and param.is_floating_point():
            pixels = pixels.to(param.dtype)
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            logits_shape = tuple(unwrap_output(self.model(pixels)).shape)
        finally:
            for handle in handles:
                handle.remove()
            for module, mode in modes.items():
                module.train(mode)
        result = {path: shape for path, shape in shapes.items() if calls[path] == 1}
        result["hook_logits"] = logits_shape
        self._shapes[image_hw] = result
        return result

    def forward(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        return self.hook_logits(unwrap_output(self.model(pixels_BCHW)))

    # -- the stage contract ------------------------------------------------------------------------

    def token_layout(self, hook_name: str, image_hw: tuple[int, int] | None = None) -> TokenLayout:
        """(C, H, W) maps are H*W patch tokens of width C; vectors are one summary token.

        Token sequences (B, T, D) from a wrapped model are not mapped to patches: all T count as prefix.
        """
        self.check_hook_names([hook_name])
        shape = self.probe_shapes(tuple(image_hw or self.preprocess.size))[hook_name]
        if len(shape) == 4:
            return TokenLayout(0, 0, (shape[2], shape[3]), shape[1])
        if len(shape) == 3:
            return TokenLayout(shape[1], 0, None, shape[2])
        if len(shape) == 2:
            return TokenLayout(1, 0, None, shape[1])
        raise ValueError(f"hook {hook_name!r} has shape {shape}, which cannot be read as tokens")

    def to_tokens(self, hook_name: str, acts: torch.Tensor) -> torch.Tensor:
        """A hook's activations as (B, T, D) tokens: (B, C, H, W) maps row-major, vectors as one token."""
        return as_tokens(acts)

    def from_tokens(self, hook_name: str, tokens_BTD: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The inverse of `to_tokens`: tokens back to the hook's own `shape`."""
        return from_tokens(tokens_BTD, shape)

    def capture(self, pixels_BCHW: torch.Tensor, hook_names: list[str]) -> dict[str, torch.Tensor]:
        """One forward, stopped as soon as every requested hook has fired; each as (B, T, D) tokens.

        The autograd graph is kept, so gradients flow from the returned tokens back to the pixels and the
        weights. `collect` is the same pass without gradients.
        """
        self.check_hook_names(hook_names)
        wanted = set(hook_names)
        seen: dict[str, torch.Tensor] = {}

        def save(acts: torch.Tensor, hook: HookPoint) -> None:
            seen[hook.name] = acts.clone(memory_format=torch.contiguous_format)
            if len(seen) == len(wanted):
                raise _StopForward

        try:
            with self.hooks(fwd_hooks=[(name, save) for name in wanted]):
                self(pixels_BCHW)
        except _StopForward:
            pass
        return {name: self.to_tokens(name, seen[name]) for name in hook_names}

    @torch.no_grad()
    def collect(self, pixels_BCHW: torch.Tensor, hook_names: list[str]) -> dict[str, torch.Tensor]:
        """`capture` without gradients: each requested hook's activations as (B, T, D) tokens."""
        return self.capture(pixels_BCHW, hook_names)

    def weights_hash(self) -> str:
        described = {"HookedModule": type(self.model).__name__, "config": self.config}
        return weights_hash(self.model, {**described, "hooks": self.hook_names()})


def _through(hook_point: HookPoint):
    """A forward hook sending a module's output through `hook_point`.

    While hooks are attached the output is copied first, so an in-place op later in the model (ResNet's
    `hidden += residual`) cannot change what a hook cached.
    """

    def forward_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor):
            return None
        result = hook_point(output)
        return result.clone() if hook_point.fwd_hooks and result is output else result

    return forward_hook


def _recorder(path: str, calls: dict[str, int], shapes: dict[str, tuple[int, ...]]):
    def forward_hook(module: nn.Module, inputs: Any, output: Any) -> None:
        calls[path] = calls.get(path, 0) + 1
        if isinstance(output, torch.Tensor):
            shapes[path] = tuple(output.shape)

    return forward_hook


def default_preprocess(size: tuple[int, int] = (224, 224)) -> Preprocess:
    """ImageNet preprocessing (resize shortest edge to 256/224 of the size, centre crop), with a warning."""
    warnings.warn(
        "the model carries no preprocessing; using ImageNet mean/std, bicubic resize and centre crop "
        f"to {size}",
        stacklevel=2,
    )
    return Preprocess(
        size=size,
        resize_shortest_edge=round(size[0] * 256 / 224),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        resample="bicubic",
    )
