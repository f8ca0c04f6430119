"""The package order of docs/design.md ("Data flow"), checked over every import in vitsae/.

Every `import`/`from ... import` counts, at module level or inside functions (lazy imports too) and under
`TYPE_CHECKING`. A package may import only from rows below its own; packages on one row are independent;
`report` imports no model, SAE, kernel or trainer.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vitsae"

# Bottom to top. Root helpers are modules (vitsae/<name>.py); the rest are packages (vitsae/<name>/) or,
# for demo and cli, top-level modules. `edit`, `featureviz`, `attribution` and `circuits` are listed
# before they exist so that they land in their row.
LAYERS: list[set[str]] = [
    {"vitsae", "errors"},  # the root helpers, in three rows
    {"fileio", "tokens", "distributed"},
    {"config"},
    {"data"},
    {"models"},
    {"store"},
    {"kernels"},
    {"sae"},
    {"eval.metrics"},  # the reconstruction metrics the trainer also reports; the rest of eval sits above
    {"train", "edit", "featureviz", "attribution"},
    {"eval"},
    {"analysis"},
    {"circuits"},  # ranks edges by the statistics' E[a | a > 0] and reads the head through analysis.logits
    {"report"},
    {"cli"},
    {"demo"},  # drives every stage through cli.main
]
ROW = {unit: row for row, units in enumerate(LAYERS) for unit in units}
# `report` renders files and computes nothing: it loads no model or SAE, though they sit below it.
NEVER = {"report": {"models", "sae", "kernels", "train"}}
# Modules that sit below the rest of their package; the package's __init__ belongs with them, since
# importing such a module runs it.
LOWER_MODULES = {"vitsae.eval.metrics": "eval.metrics"}


def unit_of(module: str) -> str:
    """`vitsae.store.reader` -> `store`; `vitsae.fileio` -> `fileio`; `vitsae` -> `vitsae`;
    `vitsae.eval.metrics` and `vitsae.eval` (its __init__) -> `eval.metrics`."""
    for lower, unit in LOWER_MODULES.items():
        if module == lower or module.startswith(f"{lower}.") or module == lower.rsplit(".", 1)[0]:
            return unit
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imported_modules(path: Path, package: str, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every vitsae import in the file at `path` (in `package` of the tree at
    `root`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from vitsae import store` imports the package `store`, `from vitsae.eval import
            # faithfulness` the module `vitsae.eval.faithfulness`
            folder = root.parent.joinpath(*module.split("."))
            for alias in node.names:
                is_module = (folder / alias.name).is_dir() or (folder / f"{alias.name}.py").is_file()
                found.append((node.lineno, f"{module}.{alias.name}" if is_module else module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return [(line, module) for line, module in found if module.split(".")[0] == "vitsae"]


def layering_violations(root: Path) -> list[str]:
    """Every import in the `vitsae` tree at `root` that breaks LAYERS, as 'file:line: a -> b (why)'."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        parts = list(relative.parts)
        package = ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(".__init__")
        source = unit_of(".".join(p for p in parts if p != "__init__"))
        where = f"{path.relative_to(root.parent)}"
        if source not in ROW:
            problems.append(f"{where}: package {source!r} is in no row of LAYERS; add it where it belongs")
            continue
        for line, module in imported_modules(path, package, root):
            target = unit_of(module)
            if target == source:
                continue
            if target not in ROW:
                problems.append(f"{where}:{line}: imports {module}, whose package is in no row of LAYERS")
            elif target in NEVER.get(source, ()):
                problems.append(f"{where}:{line}: {source} -> {target} ({source} must not import {target})")
            elif ROW[target] > ROW[source]:
                problems.append(f"{where}:{line}: {source} -> {target} (a back edge: {target} is above)")
            elif ROW[target] == ROW[source]:
                problems.append(f"{where}:{line}: {source} -> {target} (same row: they must be independent)")
    return problems


def test_vitsae_keeps_the_package_order():
    assert layering_violations(ROOT) == []


def test_every_package_has_a_row():
    units = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    units |= {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    assert units - set(ROW) == set()


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "vitsae"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert layering_violations(copy) == []
    return copy


def inject(path: Path, code: str) -> None:
    path.write_text(path.read_text() + f"\n\ndef _injected():\n    {code}\n")


@pytest.mark.parametrize(
    ("file", "code", "expected"),
    [
        ("data/loader.py", "from vitsae.report import browser", "data -> report (a back edge"),
        ("store/reader.py", "import vitsae.analysis.stats", "store -> analysis (a back edge"),
        ("tokens.py", "from vitsae import models", "tokens -> models (a back edge"),
        ("report/render.py", "from vitsae.models import load", "report -> models (report must not"),
        ("analysis/topk.py", "from ..report import render", "analysis -> report (a back edge"),
        ("train/config.py", "from vitsae.edit import splice", "train -> edit (same row"),
        ("models/load.py", "importlib.import_module('vitsae.cli')", "models -> cli (a back edge"),
        ("eval/metrics.py", "from vitsae.train import trainer", "eval.metrics -> train (a back edge"),
        ("eval/__init__.py", "from vitsae.edit import splice", "eval.metrics -> edit (a back edge"),
        ("sae/io.py", "from vitsae.eval import evaluate_sae", "sae -> eval.metrics (a back edge"),
    ],
)
def test_an_injected_edge_is_caught(tree_copy: Path, file: str, code: str, expected: str):
    inject(tree_copy / file, code)
    (problem,) = layering_violations(tree_copy)
    assert problem.startswith(f"vitsae/{file}:") and expected in problem


def test_a_package_without_a_row_is_caught(tree_copy: Path):
    (tree_copy / "newstage").mkdir()
    (tree_copy / "newstage" / "__init__.py").write_text("")
    assert layering_violations(tree_copy) == [
        "vitsae/newstage/__init__.py: package 'newstage' is in no row of LAYERS; add it where it belongs"
    ]
