"""Hooked backbones: HookedViT, converters from Hugging Face, a hook wrapper for any nn.Module, `load(spec)`.

Every loaded model is a TransformerLens `HookedRootModule` with the stage contract of docs/design.md:
`preprocess`, `hook_names()`, `check_hook_names()`, `token_layout()`, `collect()` and `weights_hash()`.
"""

from vitsae.models.config import HookedViTConfig
from vitsae.models.layout import TokenLayout
from vitsae.models.vit import HookedViT

__all__ = ["HookedViT", "HookedViTConfig", "TokenLayout"]
