"""The package's shape: layers imported only downward, functions a reader can hold in their head (at
most 80 lines here; McCabe <= 15 is ruff's C901 in `make lint`), and a README whose layout lists exactly
the tree.

Layers, bottom up (a module may import its own layer and the layers below it, never above):
base modules, then model/data/losses, inference, scoring, report, notebook, train, experiments, and the
entry points. `model/` is exempt from the size rule: its modules port the original networks line for
line, and the fixtures decide their shape.
"""

from __future__ import annotations

import ast
import re

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "lib" / "page4d"
LAYERS = [
    {"checks", "geometry", "determinism", "devices", "profiling", "records", "cli_args"},
    {"model", "data", "losses"},
    {"inference"},
    {"scoring"},
    {"report"},
    {"notebook"},
    {"train"},
    {"experiments"},
    {"main", "predict", "bench", "__init__"},
]
MAX_LINES = 80
EXEMPT_FROM_SIZE = {"model"}  # faithful ports of the original networks


def _layer(top: str) -> int:
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"page4d.{top} is in no layer of tests/test_layout.py: place it")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        yield path, rel.parts


def _page4d_imports(tree: ast.AST, parts: tuple[str, ...]) -> set[str]:
    """Top-level page4d sub-package/module names a module imports (absolute or relative)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = list(parts[:-1])[: len(parts) - node.level]
                names = [".".join(["page4d", *base, *([node.module] if node.module else [])])]
                if not base and node.module is None:
                    names = [f"page4d.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
                if node.module == "page4d":
                    names = [f"page4d.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("page4d.") and name != "page4d.__version__":
                found.add(name.split(".")[1])
    return found


def test_every_module_imports_only_its_own_layer_and_the_layers_below():
    upward = []
    for path, parts in _modules():
        own = _layer(parts[0])
        for top in _page4d_imports(ast.parse(path.read_text()), parts):
            if _layer(top) > own:
                upward.append(f"{'/'.join(parts)}.py imports page4d.{top}")
    assert not upward, upward


def test_no_function_outside_the_model_ports_is_long_or_tangled():
    offenders = []
    for path, parts in _modules():
        if parts[0] in EXEMPT_FROM_SIZE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    offenders.append(f"{'/'.join(parts)}.py:{node.lineno} {node.name} ({lines} lines)")
    assert not offenders, offenders


def test_the_readme_layout_lists_exactly_the_packages_and_top_level_modules():
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    listed = set(re.findall(r"(?m)^  (\w+)/", block))
    listed |= {m for line in re.findall(r"(?m)^  ((?:\w+\.py ?)+)", block) for m in line.split()}
    tree = {p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    tree |= {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    listed = {name if name.endswith(".py") else name + "/" for name in listed}
    assert listed >= tree - {"weights/"}, sorted(tree - listed)
    assert listed - {"weights/"} <= tree, sorted(listed - tree)
