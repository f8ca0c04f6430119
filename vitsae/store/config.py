"""HarvestConfig: everything `vitsae harvest` needs, and which of it defines the store's contents."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vitsae.store.format import DTYPES
from vitsae.tokens import TOKEN_SELECTIONS

# Fields that only say how to run, not what is stored: a rerun may change them and still resume.
RUN_ONLY_FIELDS = ("out", "device", "num_workers", "progress")


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
    out: Path = field(metadata={"help": "output directory; one store per hook in <out>/<hook>/"})
    tokens: Literal["all", "cls", "patches"] = field(
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
    device: str = field(default="cpu", metadata={"help": "torch device for the forward pass"})
    num_workers: int = field(default=0, metadata={"help": "image-loading worker processes"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        if not self.hooks:
            raise ValueError("HarvestConfig needs at least one hook name")
        if len(set(self.hooks)) != len(self.hooks):
            raise ValueError(f"hook names repeat: {list(self.hooks)}")
        if self.tokens not in TOKEN_SELECTIONS:
            raise ValueError(f"unknown token selection {self.tokens!r}; valid: {list(TOKEN_SELECTIONS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: {list(DTYPES)}")
        if self.batch_size < 1 or self.shard_rows < 1 or self.num_workers < 0:
            raise ValueError(
                "batch_size and shard_rows must be >= 1 and num_workers >= 0; got "
                f"{self.batch_size}, {self.shard_rows}, {self.num_workers}"
            )


def content_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Names of fields that change what a store contains, with both values, where they differ."""
    keys = sorted((set(saved) | set(wanted)) - set(RUN_ONLY_FIELDS))
    return [
        f"{k}: store has {saved.get(k)!r}, requested {wanted.get(k)!r}"
        for k in keys
        if saved.get(k) != wanted.get(k)
    ]
