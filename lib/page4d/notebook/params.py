"""A notebook's papermill parameters: what it declares, and command-line text parsed as their types.

One module used by every runner (`page4d.main`, `page4d.experiments.sweep`): names are checked
against the cell tagged `parameters` (`papermill.inspect_notebook`) before anything runs, and values are
parsed with the type the notebook declares (`int`, `float`, `bool`, `str`; anything else as a Python literal),
because papermill itself only warns about a misspelt name and YAML turns `1e-3` into a string.

Inside the notebook, `coerce_parameters(globals())` (the first code cell after `parameters`, in every
notebook) applies the same rules to what it was given, so a notebook run by plain papermill
(`-p geometry false` injects the string "false") or edited in JupyterLab is checked like one run by
`page4d.main` or the sweep: "true"/"false"/"1"/"0"/"yes"/"no"/"on"/"off" become booleans, "1e-3" a float,
and a value that does not fit (or an unknown name papermill injected) stops the notebook there, naming
the parameter.
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
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("expected a finite number")
            return value
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


# --------------------------------------------------------------------------------------------------
# inside the notebook: its first cell after `parameters` checks what it was given
# --------------------------------------------------------------------------------------------------
_SIMPLE_TYPES = {bool: "bool", int: "int", float: "float", str: "str"}
PAPERMILL_HEADER = "# Parameters"  # the first line of the cell papermill injects (tagged injected-parameters)


def _declared(namespace: dict[str, Any]) -> dict[str, NotebookParameter]:
    """The parameters the `parameters` cell declared, read from its annotations (`name: type = default`)."""
    notes = namespace.get("__annotations__") or {}
    return {
        name: NotebookParameter(name, _SIMPLE_TYPES[t], repr(namespace.get(name)), "")
        for name, t in notes.items()
        if t in _SIMPLE_TYPES
    }


def _injected_names(namespace: dict[str, Any]) -> list[str]:
    """Names papermill assigned in the cell it injected just before this one (IPython's `In` history);
    [] outside papermill (JupyterLab, or a kernel without history)."""
    history = namespace.get("In")
    if not isinstance(history, list) or len(history) < 2:
        return []
    source = history[-2]
    if not isinstance(source, str) or not source.startswith(PAPERMILL_HEADER):
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    ]


def coerce_value(value: Any, param: NotebookParameter) -> Any:
    """`value` as the parameter's declared type, by the rules `page4d.main` and the sweep apply to text:
    text is parsed (`parse_value`: "false" / "0" / "no" / "off" are False, "1e-3" is 0.001); an int is
    a float where a float is declared, and 0 / 1 are booleans where a bool is (papermill's CLI makes
    "0" an int); a number or None where text is declared becomes its text. Anything else is refused
    with the parameter's name."""
    kind = param.type_name
    if isinstance(value, str):
        return value if kind == "str" else parse_value(value, param)
    if kind == "bool" and isinstance(value, int) and value in (0, 1):
        return bool(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return parse_value(repr(float(value)), param)  # the same finiteness check as text
    if kind == "str" and (value is None or isinstance(value, (bool, int, float))):
        return str(value)
    raise ParameterError(
        f"parameter {param.name} ({kind}): got {value!r} ({type(value).__name__}), which is not a {kind}"
    )


def coerce_parameters(namespace: dict[str, Any]) -> None:
    """Check and convert the notebook's parameters in place: call it as `coerce_parameters(globals())` in
    the first code cell after the `parameters` cell, so that JupyterLab, plain papermill, the sweep and
    `page4d.main` accept and refuse exactly the same things.

    The declared parameters are the `parameters` cell's annotated assignments (`geometry: bool = True`).
    Each value is converted by `coerce_value` (papermill's `-p geometry false` injects the *string*
    "false", which would otherwise be true); an unknown name papermill injected (it only warns) and a
    value that does not fit its type are refused with `ParameterError` naming the parameter."""
    declared = _declared(namespace)
    if not declared:
        raise ParameterError(
            "no annotated parameters found: run the cell tagged 'parameters' (name: type = default) first"
        )
    unknown = sorted(set(_injected_names(namespace)) - set(declared))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown}; this notebook declares {sorted(declared)}")
    for name, param in declared.items():
        if name in namespace:
            namespace[name] = coerce_value(namespace[name], param)
