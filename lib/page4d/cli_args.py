"""Command-line options generated from a dataclass, so each knob (type, default, help) is defined once.

Why: the trainer's CLI used to copy `TrainConfig` field by field and the pretraining CLI had a loop of
its own; a default changed in the config silently differed from the one `--help` showed. Here a config
field declared with `knob(default, "help")` carries its help text in the field's metadata, and
`add_options` turns every field into an option: the annotation gives the type, the field's default the
option's default, and `DefaultsHelpFormatter` appends that default to every help line.

    field annotation (name `x_y`)      option
    int / float / str                  --x-y VALUE
    T | None (default None)            --x-y VALUE            (left out: None)
    bool, default False                --x-y                  (store_true)
    bool, default True                 --no-x-y               (store_false)
    tuple[T, ...] / list[T]            --x-y V [V ...]        (read back as a tuple)
    tuple[T, T]                        --x-y V V

`knob(..., aliases=("--old-name",))` keeps an old option name working. Standard library only, so any
layer may use it (the trainer, the experiments above it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Iterable
from typing import Any

__all__ = ["knob", "add_options", "from_args", "changed_options", "DefaultsHelpFormatter"]


def knob(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    default_factory: Any = dataclasses.MISSING,
    aliases: tuple[str, ...] = (),
    choices: Iterable[str] | None = None,
    metavar: str | tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with its command-line help (and optional aliases, choices, metavar)."""
    meta = {"help": help, "aliases": tuple(aliases), "choices": choices, "metavar": metavar}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, skip: Iterable[str] = ()
) -> list[str]:
    """Add one option per field of dataclass `cls` (except `skip`); returns the field names added."""
    skip = set(skip)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        _add_field(parser, cls, f)
        added.append(f.name)
    return added


def from_args(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """`cls(...)` from the parsed options `add_options` added (lists become tuples), plus `extra`."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in extra or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values, **extra)


def changed_options(config: Any, default: Any) -> str:
    """The options (" --x-y VALUE" each, tuples space-separated) of every field of the dataclass
    `config` whose value differs from `default`'s: what a recorded command needs beyond its defaults."""
    options = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value != getattr(default, f.name):
            shown = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
            options.append(f" --{f.name.replace('_', '-')} {shown}")
    return "".join(options)


def _add_field(parser: Any, cls: type, f: dataclasses.Field) -> None:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    scalar, nargs = _option_type(cls, f)
    meta = f.metadata
    flag = "--" + f.name.replace("_", "-")
    kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": meta.get("help", "")}
    if scalar is bool:
        if nargs is not None:
            raise TypeError(f"{cls.__name__}.{f.name}: a sequence of bools has no command-line form")
        kwargs["action"] = "store_false" if default else "store_true"
        flag = "--no-" + flag[2:] if default else flag
    else:
        kwargs.update(type=scalar, nargs=nargs)
        kwargs.update({k: meta[k] for k in ("choices", "metavar") if meta.get(k) is not None})
    parser.add_argument(flag, *meta.get("aliases", ()), **kwargs)


def _option_type(cls: type, f: dataclasses.Field) -> tuple[type, int | str | None]:
    """(the type each value is parsed with, argparse's nargs) from the field's annotation."""
    tp = f.type
    if isinstance(tp, str):  # `from __future__ import annotations`: resolve in the class's module
        tp = eval(tp, vars(sys.modules[cls.__module__]))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # T | None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            tp = rest[0]
            origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and len(args) == 1:
        return args[0], "+"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0], "+"
    if origin is tuple and args and len(set(args)) == 1:
        return args[0], len(args)
    if tp in (int, float, str, bool):
        return tp, None
    raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for {tp!r}; pass it in `skip`")


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (unless the help already says what the default is);
    a `--no-x` switch says the setting is on unless given."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").replace("%", "%%")
        if action.required or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return text + " (default: off)"
        if isinstance(action, argparse._StoreFalseAction):
            return text + " (default: on; this switch turns it off)"
        return text + " (default: %(default)s)"
