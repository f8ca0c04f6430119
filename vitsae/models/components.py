"""The pieces of a HookedViT, weights in TransformerLens layout so circuit code reads them directly.

Per layer: `attn.W_Q/W_K/W_V` [n_heads, d_model, d_head], `attn.W_O` [n_heads, d_head, d_model],
`attn.b_Q/b_K/b_V` [n_heads, d_head], `attn.b_O` [d_model]; `mlp.W_in` [d_model, d_mlp], `mlp.b_in` [d_mlp],
`mlp.W_out` [d_mlp, d_model], `mlp.b_out` [d_model] (gated MLPs add `mlp.W_gate` [d_model, d_mlp],
`mlp.b_gate`); norms `ln1/ln2.w`, `.b` [d_model]; with layer scale,
`ls1`/`ls2` [d_model] multiply the attention / MLP output before it is added to the residual stream.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from vitsae.errors import InvalidValue
from vitsae.models.config import Activation, HookedViTConfig


def activation_fn(name: Activation, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if name == "relu":
        return F.relu(x)
    if name == "silu":
        return F.silu(x)
    raise InvalidValue(f"unknown activation {name!r}; known: gelu, gelu_tanh, quick_gelu, relu, silu")


class LayerNorm(nn.Module):
    """LayerNorm with weight `w`, bias `b`; `hook_normalized` sees the output."""

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_normalized = HookPoint()

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        return self.hook_normalized(F.layer_norm(x_BTD, (x_BTD.shape[-1],), self.w, self.b, self.eps))


class Attention(nn.Module):
    """Multi-head attention; queries come from `x` and keys/values from `kv` (defaults to `x`).

    The scores and pattern are materialised only while a hook is attached to `hook_attn_scores` or
    `hook_pattern` (TransformerLens hooks, as run_with_cache / run_with_hooks add them); otherwise the
    fused `scaled_dot_product_attention` runs, which is faster and needs no [B, H, T, T] memory.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        d_head = d_model // n_heads
        self.W_Q = nn.Parameter(torch.zeros(n_heads, d_model, d_head))
        self.W_K = nn.Parameter(torch.zeros(n_heads, d_model, d_head))
        self.W_V = nn.Parameter(torch.zeros(n_heads, d_model, d_head))
        self.W_O = nn.Parameter(torch.zeros(n_heads, d_head, d_model))
        self.b_Q = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_K = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_V = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_O = nn.Parameter(torch.zeros(d_model))
        self.scale = 1.0 / math.sqrt(d_head)
        self.hook_q = HookPoint()  # [B, Tq, H, E]
        self.hook_k = HookPoint()  # [B, Tk, H, E]
        self.hook_v = HookPoint()  # [B, Tk, H, E]
        self.hook_attn_scores = HookPoint()  # [B, H, Tq, Tk], scaled, before softmax
        self.hook_pattern = HookPoint()  # [B, H, Tq, Tk]
        self.hook_z = HookPoint()  # [B, Tq, H, E]

    def forward(self, x_BTD: torch.Tensor, kv_BSD: torch.Tensor | None = None) -> torch.Tensor:
        kv_BSD = x_BTD if kv_BSD is None else kv_BSD
        q_BTHE = self.hook_q(torch.einsum("btd,hde->bthe", x_BTD, self.W_Q) + self.b_Q)
        k_BSHE = self.hook_k(torch.einsum("bsd,hde->bshe", kv_BSD, self.W_K) + self.b_K)
        v_BSHE = self.hook_v(torch.einsum("bsd,hde->bshe", kv_BSD, self.W_V) + self.b_V)
        if self.hook_attn_scores.has_hooks() or self.hook_pattern.has_hooks():
            scores_BHTS = self.hook_attn_scores(torch.einsum("bthe,bshe->bhts", q_BTHE, k_BSHE) * self.scale)
            pattern_BHTS = self.hook_pattern(scores_BHTS.softmax(dim=-1))
            z_BTHE = torch.einsum("bhts,bshe->bthe", pattern_BHTS, v_BSHE)
        else:  # nobody looks at the pattern: the fused kernel, without the [B, H, T, T] tensors
            q, k, v = (t.transpose(1, 2) for t in (q_BTHE, k_BSHE, v_BSHE))
            z_BTHE = F.scaled_dot_product_attention(q, k, v, scale=self.scale).transpose(1, 2)
        z_BTHE = self.hook_z(z_BTHE)
        return torch.einsum("bthe,hed->btd", z_BTHE, self.W_O) + self.b_O


class MLP(nn.Module):
    """post = act(x W_in + b_in), or gated: act(x W_gate + b_gate) * (x W_in + b_in)."""

    def __init__(self, d_model: int, d_mlp: int, activation: Activation, gated: bool = False):
        super().__init__()
        self.activation = activation
        self.W_gate = nn.Parameter(torch.zeros(d_model, d_mlp)) if gated else None
        self.b_gate = nn.Parameter(torch.zeros(d_mlp)) if gated else None
        self.W_in = nn.Parameter(torch.zeros(d_model, d_mlp))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.zeros(d_mlp, d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.hook_pre = HookPoint()  # [B, T, d_mlp]: the activation's input (the gate when gated)
        self.hook_pre_linear = HookPoint() if gated else None  # [B, T, d_mlp]: x W_in + b_in when gated
        self.hook_post = HookPoint()  # [B, T, d_mlp]

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        if self.W_gate is None:
            pre_BTM = self.hook_pre(x_BTD @ self.W_in + self.b_in)
            post_BTM = self.hook_post(activation_fn(self.activation, pre_BTM))
        else:
            pre_BTM = self.hook_pre(x_BTD @ self.W_gate + self.b_gate)
            linear_BTM = self.hook_pre_linear(x_BTD @ self.W_in + self.b_in)
            post_BTM = self.hook_post(activation_fn(self.activation, pre_BTM) * linear_BTM)
        return post_BTM @ self.W_out + self.b_out


class Block(nn.Module):
    """Pre-norm block: resid_mid = resid_pre + attn(ln1(.)); resid_post = resid_mid + mlp(ln2(.))."""

    def __init__(self, cfg: HookedViTConfig):
        super().__init__()
        # registered in forward order, so hook_names() lists them in the order they fire
        self.hook_resid_pre = HookPoint()
        self.ln1 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.attn = Attention(cfg.d_model, cfg.n_heads)
        self.ls1 = nn.Parameter(torch.ones(cfg.d_model)) if cfg.layer_scale else None
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln2 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.mlp = MLP(cfg.d_model, cfg.d_mlp, cfg.activation, cfg.gated_mlp)
        self.ls2 = nn.Parameter(torch.ones(cfg.d_model)) if cfg.layer_scale else None
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid_BTD: torch.Tensor) -> torch.Tensor:
        resid_BTD = self.hook_resid_pre(resid_BTD)
        attn_BTD = self.attn(self.ln1(resid_BTD))
        if self.ls1 is not None:
            attn_BTD = attn_BTD * self.ls1
        resid_BTD = self.hook_resid_mid(resid_BTD + self.hook_attn_out(attn_BTD))
        mlp_BTD = self.mlp(self.ln2(resid_BTD))
        if self.ls2 is not None:
            mlp_BTD = mlp_BTD * self.ls2
        return self.hook_resid_post(resid_BTD + self.hook_mlp_out(mlp_BTD))


class AttentionPool(nn.Module):
    """SigLIP's pooling head: a learned probe attends over all tokens, then a residual MLP on the result."""

    def __init__(self, cfg: HookedViTConfig):
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(cfg.d_model))
        self.attn = Attention(cfg.d_model, cfg.n_heads)
        self.ln = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.mlp = MLP(cfg.d_model, cfg.d_mlp, cfg.activation)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        probe_B1D = self.probe.expand(x_BTD.shape[0], 1, -1)
        pooled_B1D = self.attn(probe_B1D, x_BTD)
        pooled_B1D = pooled_B1D + self.mlp(self.ln(pooled_B1D))
        return pooled_B1D[:, 0]
