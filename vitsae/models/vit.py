"""HookedViT: a pre-norm vision transformer with TransformerLens hook points at every site.

Hook names: `hook_embed` (patch embeddings; with a conv stem, its output: the stem's inner maps have
no hooks), `hook_pos_embed`, `ln_pre.hook_normalized` (when the model has a pre-norm), per block
`blocks.{l}.hook_resid_pre`, `blocks.{l}.ln1.hook_normalized`, `blocks.{l}.attn.hook_q/hook_k/hook_v/hook_z`
[B, T, H, E], `blocks.{l}.attn.hook_attn_scores` and `hook_pattern` [B, H, T, T], `blocks.{l}.hook_attn_out`,
`blocks.{l}.hook_resid_mid`, `blocks.{l}.ln2.hook_normalized`, `blocks.{l}.mlp.hook_pre/hook_post`,
`blocks.{l}.hook_mlp_out`, `blocks.{l}.hook_resid_post`, then `ln_final.hook_normalized`, the
attention-pool head's hooks (`attn_pool.*`), `hook_pooled` and, when the model has a head, `hook_logits`
(its output: logits or projected embedding; a head-less model's output is `hook_pooled`). Tokens are
`[CLS?][registers...][patches row-major]`.

Weights follow TransformerLens (see `vitsae.models.components`; stacked over layers as `model.W_Q` etc.,
see `vitsae.models.weights`). The patch embedding is `embed.W_E` [d_model, C, p, p] with `embed.b_E`; a
convolutional stem has `embed.layers.{i}.W` [C_i, C_{i-1}, 3, 3] with BatchNorm `w`, `b`, `running_mean`,
`running_var`, then `embed.W_E` [d_model, C_last, 1, 1] and `embed.b_E`. Position embeddings are
`pos_embed.W_pos` [n_cls + grid_h*grid_w, d_model] (registers have none), the head `W_U`
[pooled_width, head_out] with `b_U`, and the ViT pooler `pooler_W` [d_model, d_model] / `pooler_b` (tanh).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from vitsae.data.preprocess import Preprocess
from vitsae.errors import InvalidValue
from vitsae.fileio import weights_hash
from vitsae.models.components import AttentionPool, Block, LayerNorm
from vitsae.models.config import HookedViTConfig
from vitsae.models.layout import as_tokens, from_tokens
from vitsae.models.protocol import SharedHookMethods
from vitsae.models.weights import StackedWeights
from vitsae.tokens import TokenLayout

_PER_HEAD = ("hook_q", "hook_k", "hook_v", "hook_z")
_PATTERNS = ("hook_attn_scores", "hook_pattern")


class PatchEmbed(nn.Module):
    def __init__(self, cfg: HookedViTConfig):
        super().__init__()
        p = cfg.patch_size
        self.patch_size = p
        self.W_E = nn.Parameter(torch.zeros(cfg.d_model, cfg.n_channels, p, p))
        self.b_E = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.patch_bias else None

    def forward(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        maps_BDhw = F.conv2d(pixels_BCHW, self.W_E, self.b_E, stride=self.patch_size)
        return maps_BDhw.flatten(2).transpose(1, 2)


class StemLayer(nn.Module):
    """A stride-2 3x3 convolution (no bias), BatchNorm and GELU: one halving of the feature map."""

    def __init__(self, c_in: int, c_out: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(c_out, c_in, 3, 3))
        self.w = nn.Parameter(torch.ones(c_out))
        self.b = nn.Parameter(torch.zeros(c_out))
        self.register_buffer("running_mean", torch.zeros(c_out))
        self.register_buffer("running_var", torch.ones(c_out))
        self.momentum, self.eps = momentum, eps

    def forward(self, maps_BCHW: torch.Tensor) -> torch.Tensor:
        maps_BCHW = F.conv2d(maps_BCHW, self.W, stride=2, padding=1)
        maps_BCHW = F.batch_norm(
            maps_BCHW,
            self.running_mean,
            self.running_var,
            self.w,
            self.b,
            self.training,
            self.momentum,
            self.eps,
        )
        return F.gelu(maps_BCHW)


class ConvStem(nn.Module):
    """Convolutional patch embedding: `cfg.conv_stem` stride-2 layers, then a 1x1 projection to d_model.

    Same token grid as patchify with `patch_size = 2 ** len(cfg.conv_stem)`, but overlapping, nonlinear
    receptive fields; small ViTs trained from scratch learn shape far faster with it.
    """

    def __init__(self, cfg: HookedViTConfig):
        super().__init__()
        channels = (cfg.n_channels, *cfg.conv_stem)
        self.layers = nn.ModuleList(StemLayer(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True))
        self.W_E = nn.Parameter(torch.zeros(cfg.d_model, channels[-1], 1, 1))
        self.b_E = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.patch_bias else None

    def forward(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        maps_BCHW = pixels_BCHW
        for layer in self.layers:
            maps_BCHW = layer(maps_BCHW)
        return F.conv2d(maps_BCHW, self.W_E, self.b_E).flatten(2).transpose(1, 2)


class PosEmbed(nn.Module):
    """Learned position embeddings, bicubically resized for a patch grid other than the trained one."""

    def __init__(self, cfg: HookedViTConfig):
        super().__init__()
        self.n_cls = cfg.n_cls
        self.grid_hw = cfg.grid_hw
        self.antialias = cfg.pos_interpolation == "bicubic_antialias"
        self.W_pos = nn.Parameter(torch.zeros(cfg.n_cls + cfg.grid_hw[0] * cfg.grid_hw[1], cfg.d_model))

    def forward(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        """Position embeddings [n_cls + h*w, d_model] for a patch grid of `grid_hw`."""
        if tuple(grid_hw) == tuple(self.grid_hw):
            return self.W_pos
        cls_pos, patch_pos = self.W_pos[: self.n_cls], self.W_pos[self.n_cls :]
        grid_1Dhw = patch_pos.reshape(1, *self.grid_hw, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(
            grid_1Dhw.float(), size=grid_hw, mode="bicubic", align_corners=False, antialias=self.antialias
        ).to(patch_pos.dtype)
        return torch.cat([cls_pos, resized.permute(0, 2, 3, 1).reshape(-1, patch_pos.shape[-1])])


class HookedViT(SharedHookMethods, StackedWeights, HookedRootModule):
    """A vision transformer whose every intermediate tensor is a TransformerLens hook point."""

    def __init__(self, cfg: HookedViTConfig, preprocess: Preprocess | None = None):
        super().__init__()
        self.cfg = cfg
        self.preprocess = preprocess or Preprocess(size=cfg.image_size)
        self.embed = ConvStem(cfg) if cfg.conv_stem else PatchEmbed(cfg)
        self.hook_embed = HookPoint()
        self.pos_embed = PosEmbed(cfg)
        self.hook_pos_embed = HookPoint()
        self.cls_token = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.class_token else None
        n_reg = cfg.n_registers
        self.register_tokens = nn.Parameter(torch.zeros(n_reg, cfg.d_model)) if n_reg else None
        self.ln_pre = LayerNorm(cfg.d_model, cfg.ln_eps) if cfg.pre_norm else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg.d_model, cfg.ln_eps) if cfg.final_norm else None
        self.attn_pool = AttentionPool(cfg) if cfg.pool == "attn" else None
        self.pooler_W = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_model)) if cfg.pooler_dense else None
        self.pooler_b = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.pooler_dense else None
        self.hook_pooled = HookPoint()
        self.W_U = nn.Parameter(torch.zeros(cfg.pooled_width, cfg.head_out)) if cfg.head_out else None
        self.b_U = nn.Parameter(torch.zeros(cfg.head_out)) if cfg.head_out and cfg.head_bias else None
        # a head-less model (head_out 0) has no logits: its output is `hook_pooled`
        self.hook_logits = HookPoint() if cfg.head_out else None
        self.init_weights()
        self.setup()

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """ViT-style random init for training from scratch (the global torch RNG): matrices, tokens and
        position embeddings ~ N(0, std); biases 0; norm weights and layer scales 1."""
        for name, param in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("w", "ls1", "ls2"):
                param.fill_(1.0)
            elif leaf in ("b", "pooler_b") or leaf.startswith("b_"):
                param.zero_()
            else:
                param.normal_(0.0, std)

    def grid_for(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        p = self.cfg.patch_size
        if image_hw[0] % p or image_hw[1] % p:
            raise InvalidValue(f"image size {tuple(image_hw)} is not a multiple of the patch size {p}")
        return (image_hw[0] // p, image_hw[1] // p)

    def embed_tokens(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        """Pixels -> the residual stream entering block 0: [CLS?][registers][patches] (+ pre-norm)."""
        if pixels_BCHW.ndim != 4 or pixels_BCHW.shape[1] != self.cfg.n_channels:
            raise InvalidValue(
                f"expected pixels of shape (B, {self.cfg.n_channels}, H, W), got {tuple(pixels_BCHW.shape)}"
            )
        grid_hw = self.grid_for(tuple(pixels_BCHW.shape[-2:]))
        batch = pixels_BCHW.shape[0]
        patches_BPD = self.hook_embed(self.embed(pixels_BCHW.to(self.embed.W_E.dtype)))
        pos_BTD = self.hook_pos_embed(self.pos_embed(grid_hw).expand(batch, -1, -1))
        parts = [] if self.cls_token is None else [self.cls_token.expand(batch, 1, -1)]
        tokens_BTD = torch.cat([*parts, patches_BPD], dim=1) + pos_BTD
        if self.register_tokens is not None:
            n_cls = self.cfg.n_cls
            registers_BRD = self.register_tokens.expand(batch, -1, -1)
            tokens_BTD = torch.cat([tokens_BTD[:, :n_cls], registers_BRD, tokens_BTD[:, n_cls:]], dim=1)
        return tokens_BTD if self.ln_pre is None else self.ln_pre(tokens_BTD)

    def pool(self, tokens_BTD: torch.Tensor) -> torch.Tensor:
        """The head's input from the final (normalised) tokens, per `cfg.pool`."""
        pool = self.cfg.pool
        patches_BPD = tokens_BTD[:, self.cfg.n_cls + self.cfg.n_registers :]
        if pool == "cls":
            return tokens_BTD[:, 0]
        if pool == "mean":
            return patches_BPD.mean(dim=1)
        if pool == "cls_mean":
            return torch.cat([tokens_BTD[:, 0], patches_BPD.mean(dim=1)], dim=-1)
        if pool == "attn":
            return self.attn_pool(tokens_BTD)
        return tokens_BTD

    def forward(self, pixels_BCHW: torch.Tensor, stop_at_layer: int | None = None) -> torch.Tensor:
        """Pixels -> model output; `stop_at_layer=l` runs blocks [0, l) and returns the residual stream.

        Negative `stop_at_layer` counts from the end, as in TransformerLens.
        """
        resid_BTD = self.embed_tokens(pixels_BCHW)
        blocks = self.blocks if stop_at_layer is None else self.blocks[:stop_at_layer]
        for block in blocks:
            resid_BTD = block(resid_BTD)
        if stop_at_layer is not None:
            return resid_BTD
        if self.ln_final is not None:
            resid_BTD = self.ln_final(resid_BTD)
        pooled = self.pool(resid_BTD)
        if self.pooler_W is not None:
            pooled = torch.tanh(pooled @ self.pooler_W + self.pooler_b)
        pooled = self.hook_pooled(pooled)
        if self.W_U is not None:
            pooled = pooled @ self.W_U
            if self.b_U is not None:
                pooled = pooled + self.b_U
        return pooled if self.hook_logits is None else self.hook_logits(pooled)

    # -- the stage contract ------------------------------------------------------------------------

    def token_layout(self, hook_name: str, image_hw: tuple[int, int] | None = None) -> TokenLayout:
        """How the token axis of `hook_name` (as `collect` returns it) maps to the image."""
        self.check_hook_names([hook_name])
        cfg = self.cfg
        grid_hw = self.grid_for(image_hw or self.preprocess.size)
        n_full = cfg.n_cls + cfg.n_registers + grid_hw[0] * grid_hw[1]
        full = TokenLayout(cfg.n_cls, cfg.n_registers, grid_hw, cfg.d_model)
        leaf = hook_name.rsplit(".", 1)[-1]
        if hook_name == "hook_embed":
            return TokenLayout(0, 0, grid_hw, cfg.d_model)
        if hook_name == "hook_pos_embed":
            return TokenLayout(cfg.n_cls, 0, grid_hw, cfg.d_model)
        if hook_name.startswith("attn_pool."):
            if leaf in ("hook_k", "hook_v"):
                return full
            width = {"hook_attn_scores": cfg.n_heads * n_full, "hook_pattern": cfg.n_heads * n_full}
            width.update({"hook_pre": cfg.d_mlp, "hook_post": cfg.d_mlp})
            return TokenLayout(1, 0, None, width.get(leaf, cfg.d_model))
        if hook_name in ("hook_pooled", "hook_logits"):
            width = cfg.head_out if hook_name == "hook_logits" and cfg.head_out else cfg.pooled_width
            # pool="none" keeps every token; otherwise one summary vector
            return (
                dataclasses.replace(full, width=width)
                if cfg.pool == "none"
                else TokenLayout(1, 0, None, width)
            )
        if leaf in _PATTERNS:
            return dataclasses.replace(full, width=cfg.n_heads * n_full)
        if leaf in ("hook_pre", "hook_pre_linear", "hook_post"):
            return dataclasses.replace(full, width=cfg.d_mlp)
        return full

    def layers_needed(self, hook_names: list[str]) -> int | None:
        """How many blocks a forward must run to reach all of `hook_names` (None: the whole model)."""
        needed = 0
        for name in hook_names:
            if name.startswith("blocks."):
                needed = max(needed, int(name.split(".")[1]) + 1)
            elif name not in ("hook_embed", "hook_pos_embed", "ln_pre.hook_normalized"):
                return None
        return needed

    def to_tokens(self, hook_name: str, acts: torch.Tensor) -> torch.Tensor:
        """A hook's activations as (B, T, D) tokens.

        Per-head tensors [B, T, H, E] become [B, T, H*E]; attention scores/patterns [B, H, Tq, Tk]
        become [B, Tq, H*Tk] (head-major); pooled vectors become one token.
        """
        leaf = hook_name.rsplit(".", 1)[-1]
        if leaf in _PER_HEAD:
            acts = acts.flatten(2)
        elif leaf in _PATTERNS:
            acts = acts.transpose(1, 2).flatten(2)
        return as_tokens(acts)

    def from_tokens(self, hook_name: str, tokens_BTD: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The inverse of `to_tokens`: tokens back to the hook's own `shape`."""
        leaf = hook_name.rsplit(".", 1)[-1]
        if leaf in _PER_HEAD:
            return tokens_BTD.reshape(shape)
        if leaf in _PATTERNS:
            batch, heads, n_query, n_key = shape
            return tokens_BTD.reshape(batch, n_query, heads, n_key).transpose(1, 2)
        return from_tokens(tokens_BTD, shape)

    def capture(self, pixels_BCHW: torch.Tensor, hook_names: list[str]) -> dict[str, torch.Tensor]:
        """One forward that stops after the deepest requested hook; each hook's activations as (B, T, D).

        The autograd graph is kept, so gradients flow from the returned tokens back to the pixels and the
        weights (feature visualisation, attribution). `collect` is the same pass without gradients.
        """
        self.check_hook_names(hook_names)
        seen: dict[str, torch.Tensor] = {}

        def save(acts: torch.Tensor, hook: HookPoint) -> None:
            seen[hook.name] = acts

        with self.hooks(fwd_hooks=[(name, save) for name in set(hook_names)]):
            self(pixels_BCHW, stop_at_layer=self.layers_needed(hook_names))
        return {name: self.to_tokens(name, seen[name]) for name in hook_names}

    def weights_hash(self) -> str:
        return weights_hash(self, {"HookedViT": dataclasses.asdict(self.cfg)})
