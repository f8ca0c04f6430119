"""Hooked backbones: HookedViT, converters from Hugging Face, a hook wrapper for any nn.Module, `load(spec)`.

Every loaded model is a TransformerLens `HookedRootModule` that keeps the `HookedModel` protocol
(`models/protocol.py`, docs/design.md): `preprocess`, `hook_names()`, `check_hook_names()`, `token_layout()`,
`to_tokens()`/`from_tokens()`, `capture()`/`collect()` and `weights_hash()`.
"""

from vitsae.models.config import HookedViTConfig
from vitsae.models.convert_hf import hooked_vit_from_hf
from vitsae.models.io import load_hooked_vit, save_hooked_vit
from vitsae.models.load import checkpoints_dir, load, load_recorded, recorded_spec, shipped_names
from vitsae.models.protocol import HookedModel
from vitsae.models.vit import HookedViT
from vitsae.models.wrap import HookedModule
from vitsae.tokens import TokenLayout

__all__ = [
    "HookedModel",
    "HookedModule",
    "HookedViT",
    "HookedViTConfig",
    "TokenLayout",
    "checkpoints_dir",
    "hooked_vit_from_hf",
    "load",
    "load_recorded",
    "recorded_spec",
    "load_hooked_vit",
    "save_hooked_vit",
    "shipped_names",
]
