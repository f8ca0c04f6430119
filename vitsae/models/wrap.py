"""HookedModule: TransformerLens hook points on the named submodules of any nn.Module (CNNs, timm, your own).

Each hooked submodule's output passes through a HookPoint named after the module path (e.g.
`resnet.encoder.stages.2`), so `run_with_cache`, `run_with_hooks` and `names_filter` behave as on any
HookedRootModule, and a hook's return value replaces the module's output. The model's output (logits,
unwrapped from a transformers ModelOutput) passes through `hook_logits`.

Sites are found by one dry forward on a zero image: every submodule that runs exactly once and returns a
tensor. Modules called several times per forward (a shared ReLU) cannot be told apart and are left out.

4-D outputs are read as channels-first (B, C, H, W) or channels-last (B, H, W, C) maps (ConvNeXt's
`layernorm`, `pwconv1`, `act`, `pwconv2` inside each block), decided once when the model is wrapped:
modules that always give (B, C, H, W) (convolutions, batch norm, 2-D pooling) are known, and elementwise
ones right after a map of the same shape keep its layout; otherwise, on a square image the two equal axes
are the grid, and failing that a second dry forward at double height shows which axis grows. A map that
stays ambiguous is refused, naming the hook, when it is used; declare it with
`layouts={hook: "BHWC" | "BCHW"}`.

The classification head (`W_U` [D, C], as on a HookedViT) is the model's last module when it is an
`nn.Linear` producing the output from its input through only pooling, flattening, dropout and a final
LayerNorm (whose weight is folded in): ResNet's and ConvNeXt's heads. Otherwise `W_U` is None.
`head_input_hooks` are the hooks whose output reaches that passage unchanged (ResNet's last stage): the
logit effects of an SAE are read through `W_U` only there (`analysis.logits.unembedding(model, hook)`).
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
from vitsae.errors import InvalidValue
from vitsae.fileio import weights_hash
from vitsae.models.layout import as_tokens, check_names, from_tokens
from vitsae.models.protocol import SharedHookMethods
from vitsae.tokens import TokenLayout

LAYOUTS = ("BCHW", "BHWC")


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


class HookedModule(SharedHookMethods, HookedRootModule):
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
        layouts: Mapping[str, str] | None = None,
    ):
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.config = dict(config or {})
        self._shapes: dict[tuple[int, int], dict[str, tuple[int, ...]]] = {}
        self._head: tuple[str, str | None] | None = None  # set by the first probe
        self.head_input_hooks: frozenset[str] = frozenset()  # the hooks W_U is linear in
        self._probed = False
        self._leaf_order: list[str] = []
        bad = {name: value for name, value in (layouts or {}).items() if value not in LAYOUTS}
        if bad:
            raise InvalidValue(f"layouts {bad}: each must be one of {', '.join(LAYOUTS)}")
        self._layouts: dict[str, str | None] = dict(layouts or {})
        once = [path for path in self.probe_shapes(tuple(preprocess.size)) if path != "hook_logits"]
        if hook_modules is None:
            paths = once
        else:
            check_names(hook_modules, once)
            paths = [p for p in once if p in set(hook_modules)]
        modules = dict(model.named_modules())
        shapes = self.probe_shapes(tuple(preprocess.size))
        for path in paths:  # found once, here: a second dry forward may be needed
            if len(shapes[path]) == 4 and path not in self._layouts:
                self._layouts[path] = self._find_layout(path)
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
        order: list[str] = []
        tensors: dict[str, tuple[Any, Any]] | None = None if self._probed else {}
        handles = []
        for path, module in self.model.named_modules():
            if path:
                handles.append(module.register_forward_hook(_recorder(path, calls, shapes, order, tensors)))
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
        if not self._probed:
            modules = dict(self.model.named_modules())
            self._leaf_order = [p for p in order if not any(True for _ in modules[p].children())]
            self._head = _find_head(modules, self._leaf_order, {**shapes, "hook_logits": logits_shape})
            self.head_input_hooks = _head_input_hooks(self._head, modules, self._leaf_order, tensors, calls)
            self._probed = True
        return result

    def channels_last(self, hook_name: str) -> bool:
        """Whether the 4-D output of `hook_name` is a channels-last (B, H, W, C) map (see the module
        docstring); an ambiguous one raises an `InvalidValue` saying how to declare it."""
        layout = self._layouts.get(hook_name)
        if layout is None:
            shape = self.probe_shapes(tuple(self.preprocess.size))[hook_name]
            raise InvalidValue(
                f"hook {hook_name!r} outputs a {shape} map and vitsae cannot tell which axis holds the "
                f"channels; declare it: HookedModule(model, preprocess, layouts={{{hook_name!r}: 'BHWC'}}) "
                "for a channels-last map (or 'BCHW')"
            )
        return layout == "BHWC"

    def _find_layout(self, hook_name: str) -> str | None:
        """ "BCHW" or "BHWC" for the 4-D output of `hook_name`, or None when the shapes cannot tell."""
        height, width = self.preprocess.size
        shapes = self.probe_shapes((height, width))
        shape = shapes[hook_name]
        module = dict(self.model.named_modules())[hook_name]
        if isinstance(module, _CHANNELS_FIRST):
            return "BCHW"
        if isinstance(module, _ELEMENTWISE) and hook_name in self._leaf_order:
            at = self._leaf_order.index(hook_name)
            before = self._leaf_order[at - 1] if at else None
            if before is not None and shapes.get(before) == shape and self._layouts.get(before):
                return self._layouts[before]
        _, a, b, c = shape
        if height == width and b == c and a != b:
            return "BCHW"
        if height == width and a == b and b != c:
            return "BHWC"
        try:
            taller = self.probe_shapes((2 * height, width)).get(hook_name)
        except Exception:  # a model that only runs at its own size: nothing more to learn
            taller = None
        if taller is not None and len(taller) == 4:
            grew = [axis for axis in (1, 2, 3) if taller[axis] != shape[axis]]
            if grew == [2]:
                return "BCHW"
            if grew == [1]:
                return "BHWC"
            if not grew and b == c == 1 and a != 1:
                return "BCHW"
            if not grew and a == b == 1 and c != 1:
                return "BHWC"
        return None

    @property
    def W_U(self) -> torch.Tensor | None:
        """The linear classification head [D, C] (a final LayerNorm's weight folded in), or None."""
        if self._head is None:
            return None
        linear, norm = self._head
        modules = dict(self.model.named_modules())
        W_DC = modules[linear].weight.detach().T
        if norm is not None:
            W_DC = modules[norm].weight.detach()[:, None] * W_DC
        return W_DC

    def forward(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        return self.hook_logits(unwrap_output(self.model(pixels_BCHW)))

    # -- the stage contract ------------------------------------------------------------------------

    def token_layout(self, hook_name: str, image_hw: tuple[int, int] | None = None) -> TokenLayout:
        """(C, H, W) maps (and channels-last (H, W, C) ones) are H*W patch tokens of width C; vectors are one
        summary token.

        Token sequences (B, T, D) from a wrapped model are not mapped to patches: all T count as prefix.
        """
        self.check_hook_names([hook_name])
        shape = self.probe_shapes(tuple(image_hw or self.preprocess.size))[hook_name]
        if len(shape) == 4 and self.channels_last(hook_name):
            return TokenLayout(0, 0, (shape[1], shape[2]), shape[3])
        if len(shape) == 4:
            return TokenLayout(0, 0, (shape[2], shape[3]), shape[1])
        if len(shape) == 3:
            return TokenLayout(shape[1], 0, None, shape[2])
        if len(shape) == 2:
            return TokenLayout(1, 0, None, shape[1])
        raise InvalidValue(f"hook {hook_name!r} has shape {shape}, which cannot be read as tokens")

    def to_tokens(self, hook_name: str, acts: torch.Tensor) -> torch.Tensor:
        """A hook's activations as (B, T, D) tokens: (B, C, H, W) maps row-major, vectors as one token."""
        return as_tokens(acts, acts.ndim == 4 and self.channels_last(hook_name))

    def from_tokens(self, hook_name: str, tokens_BTD: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The inverse of `to_tokens`: tokens back to the hook's own `shape`."""
        return from_tokens(tokens_BTD, shape, len(shape) == 4 and self.channels_last(hook_name))

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


# modules whose 4-D output is always (B, C, H, W), and elementwise ones that keep their input's layout
_CHANNELS_FIRST = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.GroupNorm,
    nn.InstanceNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Upsample,
)
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
)
_ELEMENTWISE += (nn.Dropout, nn.ELU, nn.Mish)

# modules that may stand between a model's features and its linear head without making the head non-linear
_HEAD_PASSAGE = (
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
    nn.AdaptiveAvgPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.LayerNorm,
)


def _find_head(
    modules: dict[str, nn.Module], leaf_order: list[str], shapes: dict[str, tuple[int, ...]]
) -> tuple[str, str | None] | None:
    """(path of the linear head, path of a LayerNorm right before it or None), or None (see the module
    docstring): the last leaf module run is an `nn.Linear` giving the output, reached from the last map or
    token sequence (a 3-D or 4-D output) only through `_HEAD_PASSAGE` modules."""
    if not leaf_order:
        return None
    head = leaf_order[-1]
    linear = modules[head]
    if not isinstance(linear, nn.Linear) or shapes.get(head) != shapes["hook_logits"]:
        return None
    feature = next(
        (path for path in reversed(leaf_order[:-1]) if not isinstance(modules[path], _HEAD_PASSAGE)), None
    )
    if feature is not None and len(shapes.get(feature, ())) < 3:
        return None  # a vector-to-vector layer before the head: an MLP head, not linear in the features
    before = leaf_order[-2] if len(leaf_order) > 1 else None
    norm = None
    if before is not None and isinstance(modules[before], nn.LayerNorm):
        if (
            tuple(modules[before].normalized_shape) == (linear.in_features,)
            and modules[before].weight is not None
        ):
            norm = before
    return head, norm


def _head_input_hooks(
    head: tuple[str, str | None] | None,
    modules: dict[str, nn.Module],
    leaf_order: list[str],
    tensors: dict[str, tuple[Any, Any]],
    calls: dict[str, int],
) -> frozenset[str]:
    """The hooks whose output is, unchanged, the input of the head's passage (pooling, flattening, norm) or
    of the head itself: those the head is linear in. Functional ops between (a `mean`) leave none."""
    if head is None:
        return frozenset()
    at = leaf_order.index(head[0])
    while at > 0 and isinstance(modules[leaf_order[at - 1]], _HEAD_PASSAGE):
        at -= 1
    consumed = tensors[leaf_order[at]][0]
    return frozenset(
        path for path, (_, output) in tensors.items() if output is consumed and calls.get(path) == 1
    )


def _recorder(
    path: str,
    calls: dict[str, int],
    shapes: dict[str, tuple[int, ...]],
    order: list[str],
    tensors: dict[str, tuple[Any, Any]] | None,
):
    """A forward hook counting calls and recording shapes (and, with `tensors`, the input and output
    tensors themselves, to tell which hooks hand their output on unchanged)."""

    def forward_hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if path not in calls:
            order.append(path)
        calls[path] = calls.get(path, 0) + 1
        if isinstance(output, torch.Tensor):
            shapes[path] = tuple(output.shape)
        if tensors is not None:
            tensors[path] = (inputs[0] if inputs else None, output)

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
