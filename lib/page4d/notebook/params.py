"""A notebook's papermill parameters: what it declares, and command-line text parsed as their types.

One module used by every runner (`page4d.main`, `page4d.experiments.sweep`): names are checked
against the cell tagged `parameters` (`papermill.inspect_notebook`) before anything runs, and values are
parsed with the type the notebook declares (`int`, `float`, `bool`, `str`; anything else as a Python literal),
because papermill itself only warns about a misspelt name and YAML turns `1e-3` into a string.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class ParameterError(ValueError):
    """Parameters a notebook run must not start with (unknown name, unparsable value)."""


@dataclass
class NotebookParameter:
    name: str
    type_name: str  # as declared ("int", "float", ...); "None" when unannotated
    default: str  # source text of the default
    help: str


def notebook_parameters(notebook: str | Path) -> dict[str, NotebookParameter]:
    """The notebook's declared parameters (its cell tagged `parameters`), in order."""
    import papermill

    path = Path(notebook)
    if not path.is_file():
        raise ParameterError(f"notebook not found: {path}")
    found = papermill.inspect_notebook(str(path))
    if not found:
        raise ParameterError(f"{path} has no cell tagged 'parameters'; nothing to parameterise")
    unread = [name for name in _assigned_names(path) if name not in found]
    if unread:
        raise ParameterError(
            f"papermill cannot read parameter(s) {unread} in {path.name}: a parameter line may hold only "
            "one '=' (look for one in its comment), so papermill would ignore it"
        )
    return {
        name: NotebookParameter(
            name, str(p.get("inferred_type_name")), str(p.get("default")), str(p.get("help", ""))
        )
        for name, p in found.items()
    }


def _assigned_names(notebook: Path) -> list[str]:
    """Names assigned at top level of the notebook's first `parameters` cell (what a reader sees)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise ParameterError(f"{notebook.name}: the parameters cell is not valid Python: {exc}") from None
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def _declared_type(param: NotebookParameter) -> str:
    t = param.type_name.replace(" ", "")
    for wrapper in ("Optional[", "typing.Optional["):
        if t.startswith(wrapper) and t.endswith("]"):
            t = t[len(wrapper) : -1]
    t = t.removesuffix("|None").removeprefix("None|")
    if t in ("None", ""):  # unannotated: the type of the default literal
        try:
            t = type(ast.literal_eval(param.default)).__name__
        except (ValueError, SyntaxError):
            t = "str"
    return t


def parse_value(text: str, param: NotebookParameter) -> Any:
    """Parse command-line text as the parameter's declared type; raise ParameterError when it does not fit."""
    kind = _declared_type(param)
    try:
        if text == "None" and "None" in param.type_name.replace("Optional", "None"):
            return None
        if kind == "bool":
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "str":
            return text
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ParameterError(
            f"parameter {param.name} ({param.type_name}): cannot parse {text!r}: {exc}"
        ) from None


def split_values(text: str) -> list[str]:
    """Split `v1,v2,...` on commas outside brackets and quotes (so `[1,2],[3,4]` gives two values)."""
    out, depth, quote_char, cur = [], 0, "", []
    for ch in text:
        if quote_char:
            quote_char = "" if ch == quote_char else quote_char
        elif ch in "'\"":
            quote_char = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur))
    return out


def format_value(value: Any) -> str:
    """Canonical text of a parsed value (so `1e-3` and `0.001` name the same cell)."""
    return value if isinstance(value, str) else repr(value)


def parse_overrides(notebook: str | Path, overrides: dict[str, str]) -> dict[str, Any]:
    """`{name: text}` checked against the notebook's parameters and parsed; unknown names are refused."""
    declared = notebook_parameters(notebook)
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {unknown} for {Path(notebook).name}; it declares {sorted(declared)}"
        )
    return {name: parse_value(text, declared[name]) for name, text in overrides.items()}
