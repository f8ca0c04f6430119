"""TraceConfig: everything `vitsae trace` needs; its fields are the command's flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vitsae.circuits.target import CircuitError
from vitsae.config import check_choices
from vitsae.sae.provenance import ALLOW_HELP


@dataclass(frozen=True)
class TraceConfig:
    """Options of one `vitsae trace` run: model, SAEs in forward order, target, images, graph size."""

    model: str = field(
        metadata={"help": "model spec: hf:<dir>, timm:<dir>, vitsae:<name>, module:<path:factory>"}
    )
    sae: tuple[str, ...] = field(metadata={"help": "trained SAE folders in forward order; repeat --sae"})
    source: str = field(metadata={"help": "images: a folder, hf:<dir>[@split], or shapes:<n>[:seed[:size]]"})
    target: str = field(metadata={"help": "what to explain: class:NAME (or index) or feature:RUN_DIR:F"})
    out: Path = field(
        metadata={"help": "output folder for graph.json, graph.safetensors, graph.html, graph.png"}
    )
    images: int = field(default=64, metadata={"help": "images to average over (after --only-class)"})
    only_class: str = field(default="", metadata={"help": "use only the images labelled with this class"})
    batch_size: int = field(default=16, metadata={"help": "images per forward pass"})
    nodes: int = field(default=10, metadata={"help": "features kept per SAE, by |attribution| to the target"})
    top_k: int = field(default=5, metadata={"help": "sources kept per target node"})
    edge_threshold: float = field(
        default=0.01, metadata={"help": "drop edges below this fraction of a target's largest |edge|"}
    )
    aggregate: Literal["sum", "top"] = field(
        default="sum", metadata={"help": "a node's scalar per image: sum over tokens, or its --top-r tokens"}
    )
    top_r: int = field(default=4, metadata={"help": "tokens summed with --aggregate top"})
    steps: int = field(
        default=0, metadata={"help": "integrated-gradient steps (0: the linear estimate a * gradient)"}
    )
    confirm: int = field(default=20, metadata={"help": "largest edges confirmed by exact ablation"})
    faithfulness: bool = field(default=True, metadata={"help": "measure the pruning/faithfulness curve"})
    per_patch_image: int = field(
        default=-1,
        metadata={"help": "also keep per-patch attributions of this image (its rank among --images)"},
    )
    stats: tuple[str, ...] = field(
        default=(),
        metadata={"help": "`vitsae stats` folder per --sae, in order (E[a|a>0] for weight ranking)"},
    )
    browser: tuple[str, ...] = field(
        default=(), metadata={"help": "feature browser folder per --sae, in order (node links); '-' for none"}
    )
    allow_other_model: bool = field(default=False, metadata={"help": ALLOW_HELP})
    device: str = field(default="cpu", metadata={"help": "torch device", "run_only": True})
    progress: bool = field(default=True, metadata={"help": "show progress bars", "run_only": True})

    def __post_init__(self) -> None:
        check_choices(self)
        positive = {
            "images": self.images,
            "batch_size": self.batch_size,
            "nodes": self.nodes,
            "top_k": self.top_k,
        }
        positive["top_r"] = self.top_r
        bad = [f"--{k.replace('_', '-')} {v}" for k, v in positive.items() if v < 1]
        if bad or self.steps < 0 or self.confirm < 0 or not 0 <= self.edge_threshold < 1:
            raise CircuitError(
                f"{', '.join(bad) or 'a value'} out of range: --images, --batch-size, --nodes, --top-k and "
                "--top-r must be >= 1, --steps and --confirm >= 0, --edge-threshold in [0, 1)"
            )
        for name, values in (("stats", self.stats), ("browser", self.browser)):
            if values and len(values) != len(self.sae):
                raise CircuitError(
                    f"{len(values)} --{name} folders for {len(self.sae)} --sae folders: give one per SAE"
                )
