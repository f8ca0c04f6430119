"""Build a HookedViT from a Hugging Face vision transformer (ViT, CLIP vision, DINOv2 (+registers), SigLIP).

Each family's config maps onto HookedViTConfig and its weights are copied into TransformerLens layout;
the result reproduces the reference's pooled output / logits and every `hidden_states` entry
(`blocks.{l}.hook_resid_pre`, and the last block's `hook_resid_post`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vitsae.data.preprocess import Preprocess
from vitsae.errors import InvalidValue
from vitsae.models.config import HookedViTConfig
from vitsae.models.vit import HookedViT

# Hugging Face `hidden_act` -> HookedViT activation
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "quick_gelu": "quick_gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def _activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        raise InvalidValue(f"unsupported activation {name!r}; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _copy(dst: nn.Parameter | None, src: torch.Tensor) -> None:
    if dst is None:
        raise InvalidValue("the reference has a weight that this HookedViT config has no place for")
    if dst.shape != src.shape:
        raise InvalidValue(
            f"shape mismatch copying weights: target {tuple(dst.shape)}, source {tuple(src.shape)}"
        )
    with torch.no_grad():
        dst.copy_(src)


def _copy_attention(attn: nn.Module, q: nn.Linear, k: nn.Linear, v: nn.Linear, o: nn.Linear) -> None:
    n_heads, d_model, d_head = attn.W_Q.shape
    for dst_w, dst_b, lin in ((attn.W_Q, attn.b_Q, q), (attn.W_K, attn.b_K, k), (attn.W_V, attn.b_V, v)):
        _copy(dst_w, lin.weight.reshape(n_heads, d_head, d_model).transpose(1, 2))
        if lin.bias is not None:
            _copy(dst_b, lin.bias.reshape(n_heads, d_head))
    _copy(attn.W_O, o.weight.T.reshape(n_heads, d_head, d_model))
    if o.bias is not None:
        _copy(attn.b_O, o.bias)


def _copy_mlp(mlp: nn.Module, fc1: nn.Linear, fc2: nn.Linear) -> None:
    _copy(mlp.W_in, fc1.weight.T)
    _copy(mlp.b_in, fc1.bias)
    _copy(mlp.W_out, fc2.weight.T)
    _copy(mlp.b_out, fc2.bias)


def _copy_norm(norm: nn.Module, ref: nn.LayerNorm) -> None:
    _copy(norm.w, ref.weight)
    _copy(norm.b, ref.bias)


def _copy_head(model: HookedViT, linear: nn.Linear | None) -> None:
    """The classifier or projection `linear`, when the config has a head for it (`head_out`)."""
    if not model.cfg.head_out:
        return
    _copy(model.W_U, linear.weight.T)
    if linear.bias is not None:
        _copy(model.b_U, linear.bias)


def _copy_patch_embeddings(model: HookedViT, emb: nn.Module) -> None:
    """ViT / DINOv2 embeddings: patch_embeddings.projection, cls_token, position_embeddings."""
    _copy(model.embed.W_E, emb.patch_embeddings.projection.weight)
    _copy(model.embed.b_E, emb.patch_embeddings.projection.bias)
    _copy(model.cls_token, emb.cls_token[0, 0])
    _copy(model.pos_embed.W_pos, emb.position_embeddings[0])


def _head_out(linear: nn.Module | None) -> int:
    return linear.out_features if isinstance(linear, nn.Linear) else 0


def _from_vit(ref: nn.Module) -> HookedViT:
    base = getattr(ref, "vit", ref)
    hf = base.config
    classifier = getattr(ref, "classifier", None)
    has_pooler = base.pooler is not None and classifier is None
    if has_pooler and hf.pooler_act != "tanh":
        raise InvalidValue(f"unsupported ViT pooler activation {hf.pooler_act!r}; supported: 'tanh'")
    if has_pooler and hf.pooler_output_size != hf.hidden_size:
        raise InvalidValue("a ViT pooler whose output size differs from hidden_size is not supported")
    cfg = HookedViTConfig(
        d_model=hf.hidden_size, n_layers=hf.num_hidden_layers, n_heads=hf.num_attention_heads,
        d_mlp=hf.intermediate_size, image_size=_pair(hf.image_size), patch_size=hf.patch_size,
        n_channels=hf.num_channels, qkv_bias=hf.qkv_bias, ln_eps=hf.layer_norm_eps,
        activation=_activation(hf.hidden_act), pool="cls", pooler_dense=has_pooler,
        head_out=_head_out(classifier),
    )  # fmt: skip
    model = HookedViT(cfg)
    emb = base.embeddings
    _copy_patch_embeddings(model, emb)
    for block, layer in zip(model.blocks, base.layers, strict=True):
        _copy_norm(block.ln1, layer.layernorm_before)
        a = layer.attention
        _copy_attention(block.attn, a.q_proj, a.k_proj, a.v_proj, a.o_proj)
        _copy_norm(block.ln2, layer.layernorm_after)
        _copy_mlp(block.mlp, layer.mlp.fc1, layer.mlp.fc2)
    _copy_norm(model.ln_final, base.layernorm)
    if has_pooler:
        _copy(model.pooler_W, base.pooler.dense.weight.T)
        _copy(model.pooler_b, base.pooler.dense.bias)
    _copy_head(model, classifier)
    return model


def _from_clip(ref: nn.Module) -> HookedViT:
    base = getattr(ref, "vision_model", ref)
    hf = base.config
    projection = getattr(ref, "visual_projection", None)
    cfg = HookedViTConfig(
        d_model=hf.hidden_size, n_layers=hf.num_hidden_layers, n_heads=hf.num_attention_heads,
        d_mlp=hf.intermediate_size, image_size=_pair(hf.image_size), patch_size=hf.patch_size,
        n_channels=hf.num_channels, patch_bias=False, pre_norm=True, ln_eps=hf.layer_norm_eps,
        activation=_activation(hf.hidden_act), pool="cls", head_out=_head_out(projection),
        head_bias=False,
    )  # fmt: skip
    model = HookedViT(cfg)
    emb = base.embeddings
    _copy(model.embed.W_E, emb.patch_embedding.weight)
    _copy(model.cls_token, emb.class_embedding)
    _copy(model.pos_embed.W_pos, emb.position_embedding.weight)
    _copy_norm(model.ln_pre, base.pre_layrnorm)
    _copy_encoder_layers(model, base.encoder.layers)
    _copy_norm(model.ln_final, base.post_layernorm)
    _copy_head(model, projection)
    return model


def _copy_encoder_layers(model: HookedViT, layers: nn.ModuleList) -> None:
    """CLIP / SigLIP encoder layers: layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1/fc2."""
    for block, layer in zip(model.blocks, layers, strict=True):
        _copy_norm(block.ln1, layer.layer_norm1)
        a = layer.self_attn
        _copy_attention(block.attn, a.q_proj, a.k_proj, a.v_proj, a.out_proj)
        _copy_norm(block.ln2, layer.layer_norm2)
        _copy_mlp(block.mlp, layer.mlp.fc1, layer.mlp.fc2)


def _from_dinov2(ref: nn.Module) -> HookedViT:
    base = ref
    for prefix in ("dinov2", "dinov2_with_registers"):
        base = getattr(ref, prefix, base)
    hf = base.config
    d_mlp = int(hf.hidden_size * hf.mlp_ratio)
    if hf.use_swiglu_ffn:  # SwiGLU keeps 2/3 of the width, rounded up to a multiple of 8 (as transformers)
        d_mlp = (int(d_mlp * 2 / 3) + 7) // 8 * 8
    classifier = getattr(ref, "classifier", None)
    n_registers = getattr(hf, "num_register_tokens", 0)
    cfg = HookedViTConfig(
        d_model=hf.hidden_size, n_layers=hf.num_hidden_layers, n_heads=hf.num_attention_heads,
        d_mlp=d_mlp, image_size=_pair(hf.image_size), patch_size=hf.patch_size, gated_mlp=hf.use_swiglu_ffn,
        n_channels=hf.num_channels, n_registers=n_registers, qkv_bias=hf.qkv_bias, layer_scale=True,
        ln_eps=hf.layer_norm_eps, activation="silu" if hf.use_swiglu_ffn else _activation(hf.hidden_act),
        pos_interpolation="bicubic_antialias" if hf.model_type == "dinov2_with_registers" else "bicubic",
        pool="cls_mean" if classifier is not None else "cls", head_out=_head_out(classifier),
    )  # fmt: skip
    model = HookedViT(cfg)
    emb = base.embeddings
    _copy_patch_embeddings(model, emb)
    if n_registers:
        _copy(model.register_tokens, emb.register_tokens[0])
    for block, layer in zip(model.blocks, base.encoder.layer, strict=True):
        _copy_norm(block.ln1, layer.norm1)
        a = layer.attention
        _copy_attention(block.attn, a.q_proj, a.k_proj, a.v_proj, a.o_proj)
        _copy(block.ls1, layer.layer_scale1.lambda1)
        _copy_norm(block.ln2, layer.norm2)
        if hf.use_swiglu_ffn:
            _copy(block.mlp.W_gate, layer.mlp.gate_proj.weight.T)
            _copy(block.mlp.b_gate, layer.mlp.gate_proj.bias)
            _copy_mlp(block.mlp, layer.mlp.up_proj, layer.mlp.down_proj)
        else:
            _copy_mlp(block.mlp, layer.mlp.fc1, layer.mlp.fc2)
        _copy(block.ls2, layer.layer_scale2.lambda1)
    _copy_norm(model.ln_final, base.layernorm)
    _copy_head(model, classifier)
    return model


def _from_siglip(ref: nn.Module) -> HookedViT:
    base = getattr(ref, "vision_model", ref)
    hf = base.config
    cfg = HookedViTConfig(
        d_model=hf.hidden_size, n_layers=hf.num_hidden_layers, n_heads=hf.num_attention_heads,
        d_mlp=hf.intermediate_size, image_size=_pair(hf.image_size), patch_size=hf.patch_size,
        n_channels=hf.num_channels, class_token=False, ln_eps=hf.layer_norm_eps,
        activation=_activation(hf.hidden_act), pool="attn" if base.use_head else "none",
    )  # fmt: skip
    model = HookedViT(cfg)
    emb = base.embeddings
    _copy(model.embed.W_E, emb.patch_embedding.weight)
    _copy(model.embed.b_E, emb.patch_embedding.bias)
    _copy(model.pos_embed.W_pos, emb.position_embedding.weight)
    _copy_encoder_layers(model, base.encoder.layers)
    _copy_norm(model.ln_final, base.post_layernorm)
    if base.use_head:
        head, pool = base.head, model.attn_pool
        d = cfg.d_model
        _copy(pool.probe, head.probe[0, 0])
        mha = head.attention
        q, k, v = (nn.Linear(d, d) for _ in range(3))
        for i, lin in enumerate((q, k, v)):
            lin.weight.copy_(mha.in_proj_weight[i * d : (i + 1) * d])
            lin.bias.copy_(mha.in_proj_bias[i * d : (i + 1) * d])
        _copy_attention(pool.attn, q, k, v, mha.out_proj)
        _copy_norm(pool.ln, head.layernorm)
        _copy_mlp(pool.mlp, head.mlp.fc1, head.mlp.fc2)
    return model


# Hugging Face class name -> converter
CONVERTERS: dict[str, Callable[[nn.Module], HookedViT]] = {
    "ViTModel": _from_vit,
    "ViTForImageClassification": _from_vit,
    "CLIPVisionModel": _from_clip,
    "CLIPVisionModelWithProjection": _from_clip,
    "Dinov2Model": _from_dinov2,
    "Dinov2ForImageClassification": _from_dinov2,
    "Dinov2WithRegistersModel": _from_dinov2,
    "Dinov2WithRegistersForImageClassification": _from_dinov2,
    "SiglipVisionModel": _from_siglip,
}


@torch.no_grad()
def hooked_vit_from_hf(ref: nn.Module, preprocess: Preprocess | None = None) -> HookedViT:
    """A HookedViT computing what the Hugging Face model `ref` computes (in eval mode), in `ref`'s dtype."""
    name = type(ref).__name__
    if name not in CONVERTERS:
        raise InvalidValue(f"no HookedViT converter for {name}; supported: {', '.join(sorted(CONVERTERS))}")
    dtype = next(ref.parameters()).dtype
    model = CONVERTERS[name](ref).to(dtype)
    model.preprocess = preprocess or model.preprocess
    return model.eval()
