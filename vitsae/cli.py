"""The `vitsae` command: the one place that knows every stage, and the one place that reports errors.

Each subcommand lives in its stage as a module with `add_arguments(parser)` and `run(args) -> int`;
it is imported only when chosen, so `vitsae --help` stays fast. `main` is the error boundary of every
subcommand: a `VitsaeError` (a mistake the user can fix) or an `OSError` (a missing, unwritable or full
disk path) becomes one line, `vitsae <command>: error: ...`, and exit status 2. `--debug` (or
`VITSAE_DEBUG=1`) re-raises it with its traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import shutil
import sys
from pathlib import Path

from vitsae.errors import VitsaeError

# name -> (module with add_arguments/run, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "hooks": ("vitsae.models.cli", "list a model's hook points and the shape of what each one holds"),
    "harvest": ("vitsae.store.cli", "save a model's activations at chosen hooks over an image set to disk"),
    "verify": (
        "vitsae.store.verify_cli",
        "check every shard of a store against its manifest's sizes and sha256",
    ),
    "train": ("vitsae.train.cli", "train an SAE, or a sweep of SAEs in one pass, on stored activations"),
    "stats": ("vitsae.analysis.cli", "per-feature statistics of an SAE over a store: top images, histograms"),
    "dissect": (
        "vitsae.analysis.dissection_cli",
        "score SAE features against concept masks (Network Dissection)",
    ),
    "report-card": (
        "vitsae.analysis.report_card_cli",
        "score an SAE or a sweep of SAEs for interpretability, each measure beside a random SAE",
    ),
    "visualize": ("vitsae.featureviz.cli", "optimise images that make SAE features, units or classes fire"),
    "browse": ("vitsae.report.cli", "write the static HTML feature browser for a statistics directory"),
    "attribute": ("vitsae.attribution.cli", "heatmaps of a class, SAE feature or unit by several methods"),
    "faithfulness": (
        "vitsae.eval.faithfulness_cli",
        "insertion/deletion, AOPC, ground-truth and randomisation checks of attribution methods",
    ),
    "edit": (
        "vitsae.edit.cli",
        "ablate, clamp, steer or patch SAE features and measure the change, or --explain a class",
    ),
    "eval": (
        "vitsae.eval.cli",
        "how well SAEs stand in for their layer: FVU, L0, spliced accuracy, KL, recovered",
    ),
    "trace": (
        "vitsae.circuits.cli",
        "trace the circuit of a class or SAE feature over SAEs at several hooks: graph, page, picture",
    ),
    "ablation": (
        "vitsae.analysis.ablation_cli",
        "ablate each feature on its top images; the effect goes to the stats folder",
    ),
    "demo": (
        "vitsae.demo",
        "harvest -> train -> stats -> browse -> eval on the shipped shapes ViT, in minutes",
    ),
}

DEBUG_HELP = "show the full traceback of an error instead of one line (also: VITSAE_DEBUG=1)"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="vitsae",
        description="Sparse autoencoders for vision models: harvest activations, train SAEs, "
        "browse and edit features.",
    )
    top.add_argument("--version", action="store_true", help="print the version and exit")
    top.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        parser = sub.add_parser(name, help=summary, description=summary)
        if name == next((arg for arg in argv if not arg.startswith("-")), None):
            importlib.import_module(module).add_arguments(parser)
            parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return top


def describe_os_error(err: OSError, out: Path | None = None) -> str:
    """One line for a disk problem: what failed and on which path (a full disk: the folder and its space)."""
    if err.errno == errno.ENOSPC:
        where = err.filename or out
        if where is None:
            return "no space left on the device; free some space and rerun (the command resumes)"
        folder = Path(where) if Path(where).is_dir() else Path(where).parent
        free = shutil.disk_usage(folder).free if folder.exists() else None
        left = "" if free is None else f" ({free / 2**20:.1f} MiB free)"
        return f"no space left on the device holding {folder}{left}; free some space and rerun"
    if err.filename is None:
        return str(err)
    what = err.strerror or type(err).__name__
    path = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
    hint = ""
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; choose a writable folder or fix its permissions"
    elif err.errno == errno.ENOTDIR:
        hint = "; a file stands where a folder is needed"
    return f"{what}: {path}{hint}"


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
    debug = ns.debug or os.environ.get("VITSAE_DEBUG", "") not in ("", "0")
    try:
        return int(importlib.import_module(COMMANDS[ns.command][0]).run(ns) or 0)
    except (VitsaeError, OSError) as err:
        if debug:
            raise
        out = getattr(ns, "out", None)
        message = str(err) if isinstance(err, VitsaeError) else describe_os_error(err, out)
        print(f"vitsae {ns.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
