"""`vitsae hooks SPEC`: list a model's hook points with the token layout and width of each."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from vitsae.config import add_config_arguments, config_from_args
from vitsae.models.load import load


@dataclass(frozen=True)
class HooksConfig:
    """What `vitsae hooks` lists."""

    spec: str = field(
        metadata={
            "help": "model spec: hf:<dir or cached id>, timm:<dir>, vitsae:<name>, module:<path:fn>",
            "positional": True,
        }
    )
    filter: str = field(default="", metadata={"help": "only hook names containing this text"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, HooksConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(HooksConfig, args)
    model = load(config.spec)
    height, width = model.preprocess.size
    print(f"{config.spec}: {type(model).__name__}, input {height}x{width}")
    rows = [("hook", "tokens", "cls", "registers", "grid", "width")]
    for name in model.hook_names():
        if config.filter not in name:
            continue
        layout = model.token_layout(name)
        grid = "-" if layout.grid_hw is None else f"{layout.grid_hw[0]}x{layout.grid_hw[1]}"
        rows.append(
            (name, str(layout.n_tokens), str(layout.n_cls), str(layout.n_registers), grid, str(layout.width))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    return 0
