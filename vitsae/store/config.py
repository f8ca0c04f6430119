"""HarvestConfig: everything `vitsae harvest` needs, and which of it defines the store's contents."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vitsae.config import check_choices
from vitsae.errors import InvalidValue
from vitsae.tokens import TokenSelection


@dataclass(frozen=True)
class HarvestConfig:
    """Options of one harvest: which model, images, hooks and tokens, and how the shards are cut."""

    model: str = field(
        metadata={"help": "model spec: hf:<dir>, timm:<dir>, vitsae:<name>, module:<path:factory>"}
    )
    source: str = field(
        metadata={
            "help": "images: a folder or saved Hugging Face dataset dir, folder:<dir>, "
            "hf:<dir>[@split], imagefolder:<dir>[@split], or shapes:<n>[:seed[:size]]"
        }
    )
    hooks: tuple[str, ...] = field(metadata={"help": "hook names to harvest, e.g. blocks.5.hook_resid_post"})
    out: Path = field(
        metadata={"help": "output directory; one store per hook in <out>/<hook>/", "run_only": True}
    )
    tokens: TokenSelection = field(
        default="all", metadata={"help": "which tokens to keep per image (CNN maps: every position)"}
    )
    include_registers: bool = field(
        default=False, metadata={"help": "keep register tokens too (token selection 'all' only)"}
    )
    dtype: Literal["float16", "bfloat16", "float32"] = field(
        default="float16", metadata={"help": "stored activation dtype"}
    )
    batch_size: int = field(default=32, metadata={"help": "images per forward pass"})
    shard_rows: int = field(
        default=65536, metadata={"help": "target rows per shard; shards hold whole batches of images"}
    )
    device: str = field(
        default="cpu", metadata={"help": "torch device for the forward pass", "run_only": True}
    )
    num_workers: int = field(default=0, metadata={"help": "image-loading worker processes", "run_only": True})
    progress: bool = field(default=True, metadata={"help": "show a progress bar", "run_only": True})

    def __post_init__(self) -> None:
        check_choices(self)
        if not self.hooks:
            raise InvalidValue("HarvestConfig needs at least one hook name")
        if len(set(self.hooks)) != len(self.hooks):
            raise InvalidValue(f"hook names repeat: {list(self.hooks)}")
        if self.batch_size < 1 or self.shard_rows < 1 or self.num_workers < 0:
            raise InvalidValue(
                "batch_size and shard_rows must be >= 1 and num_workers >= 0; got "
                f"{self.batch_size}, {self.shard_rows}, {self.num_workers}"
            )
