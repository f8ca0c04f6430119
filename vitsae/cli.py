"""The `vitsae` command: the one place that knows every stage.

Each subcommand lives in its stage as a module with `add_arguments(parser)` and `run(args) -> int`;
it is imported only when chosen, so `vitsae --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with add_arguments/run, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "hooks": ("vitsae.models.cli", "list a model's hook points and the shape of what each one holds"),
    "harvest": ("vitsae.store.cli", "save a model's activations at chosen hooks over an image set to disk"),
    "train": ("vitsae.train.cli", "train an SAE, or a sweep of SAEs in one pass, on stored activations"),
    "stats": ("vitsae.analysis.cli", "per-feature statistics of an SAE over a store: top images, histograms"),
    "edit": (
        "vitsae.edit.cli",
        "ablate, clamp, steer or patch SAE features and measure the change, or --explain a class",
    ),
    "eval": (
        "vitsae.eval.cli",
        "how well SAEs stand in for their layer: FVU, L0, spliced accuracy, KL, recovered",
    ),
    "ablation": (
        "vitsae.analysis.ablation_cli",
        "ablate each feature on its top images; the effect goes to the stats folder",
    ),
    "browse": ("vitsae.report.cli", "write the static HTML feature browser for a statistics directory"),
    "demo": (
        "vitsae.demo",
        "harvest -> train -> stats -> browse -> eval on the shipped shapes ViT, in minutes",
    ),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="vitsae",
        description="Sparse autoencoders for vision models: harvest activations, train SAEs, "
        "browse and edit features.",
    )
    top.add_argument("--version", action="store_true", help="print the version and exit")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        parser = sub.add_parser(name, help=summary, description=summary)
        if argv and argv[0] == name:
            importlib.import_module(module).add_arguments(parser)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    ns = parser.parse_args(argv)
    if ns.version:
        from vitsae import __version__

        print(__version__)
        return 0
    if ns.command is None:
        parser.print_help()
        return 0
    return int(importlib.import_module(COMMANDS[ns.command][0]).run(ns) or 0)


if __name__ == "__main__":
    sys.exit(main())
