"""The architecture of a HookedViT as one frozen dataclass (written as JSON beside saved models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vitsae.config import check_choices
from vitsae.errors import InvalidValue

Activation = Literal["gelu", "gelu_tanh", "quick_gelu", "relu", "silu"]
Pool = Literal["cls", "mean", "cls_mean", "attn", "none"]
PosInterpolation = Literal["bicubic", "bicubic_antialias"]


@dataclass(frozen=True)
class HookedViTConfig:
    """A pre-norm vision transformer: patch embedding, optional CLS/registers, L blocks, final norm, head.

    `pool` picks what the head reads: "cls" (first token), "mean" (mean of patch tokens), "cls_mean"
    (CLS concatenated with the patch mean, as DINOv2's classifier), "attn" (SigLIP's attention-pooling
    head) or "none" (forward returns the final normalised tokens).
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int
    image_size: tuple[int, int] = (224, 224)  # (H, W) the position embeddings were trained for
    patch_size: int = 16
    n_channels: int = 3
    class_token: bool = True
    n_registers: int = 0
    patch_bias: bool = True  # CLIP's patch embedding has no bias
    # Channels of stride-2 3x3 conv -> BatchNorm -> GELU layers that replace the patchify convolution
    # (a convolutional stem, Xiao et al. 2021); log2(patch_size) of them, then a 1x1 projection to d_model.
    conv_stem: tuple[int, ...] = ()
    qkv_bias: bool = True
    layer_scale: bool = False
    pre_norm: bool = False  # CLIP's `pre_layrnorm` before the first block
    final_norm: bool = True
    ln_eps: float = 1e-6
    activation: Activation = "gelu"
    gated_mlp: bool = False  # SwiGLU-style MLP (DINOv2 giant): act(x W_gate) * (x W_in)
    pos_interpolation: PosInterpolation = "bicubic"
    pool: Pool = "cls"
    pooler_dense: bool = False  # ViTModel's pooler: tanh(dense(pooled))
    head_out: int = 0  # 0: no head; else the width of the classifier / projection
    head_bias: bool = True  # False for CLIP's visual projection

    def __post_init__(self) -> None:
        check_choices(self)
        if self.d_model % self.n_heads:
            raise InvalidValue(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.pool in ("cls", "cls_mean") and not self.class_token:
            raise InvalidValue(f"pool={self.pool!r} needs a class token (class_token=True)")
        for side in self.image_size:
            if side % self.patch_size:
                raise InvalidValue(
                    f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
                )
        if self.conv_stem and 2 ** len(self.conv_stem) != self.patch_size:
            raise InvalidValue(
                f"conv_stem {self.conv_stem} has {len(self.conv_stem)} stride-2 layers, a stride of "
                f"{2 ** len(self.conv_stem)}; patch_size is {self.patch_size}"
            )

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def grid_hw(self) -> tuple[int, int]:
        """Patch grid (rows, cols) at the configured image size."""
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

    @property
    def n_cls(self) -> int:
        return int(self.class_token)

    @property
    def pooled_width(self) -> int:
        return 2 * self.d_model if self.pool == "cls_mean" else self.d_model
