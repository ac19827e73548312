"""argparse parsers built from a tool's options dataclass: one flag per field."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from rlkit.config.fields import (
    _NONE_STRINGS,
    _UNSET,
    DEFAULT_CONFIG,
    INT_MAX,
    INT_MIN,
    _field_types,
    _help_text,
    _init_fields,
    _is_list,
    _list_elem,
    _names,
    _spellings,
    _split_optional,
)

# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


class _HelpFormatter(argparse.HelpFormatter):
    """Lists all spellings of a flag once: ``--batch-size, --batch_size BATCH_SIZE``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        metavar = self._get_default_metavar_for_optional(action)
        return ", ".join(action.option_strings) + " " + self._format_args(action, metavar)


class _PreformattedHelpFormatter(_HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`_HelpFormatter` that prints the description and epilog as written."""


class _BoolAction(argparse.Action):
    """``--x`` sets True, every ``--no-x``/``--no_x`` spelling sets False."""

    def __init__(
        self, option_strings: Sequence[str], dest: str, negative: Sequence[str] = (), **kwargs: Any
    ) -> None:
        self._negative = frozenset(negative)
        super().__init__([*option_strings, *negative], dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, option_string not in self._negative)

    def format_usage(self) -> str:
        negative = [s for s in self.option_strings if s in self._negative]
        return f"{self.option_strings[0]} | {negative[0]}" if negative else self.option_strings[0]


def _scalar_converter(tp: Any, optional: bool) -> tuple[Callable[[str], Any], list[Any] | None]:
    """argparse ``type`` and ``choices`` for a scalar (or list element) type."""
    if get_origin(tp) is Literal:
        choices = list(get_args(tp))
        kinds = {type(c) for c in choices}
        if len(kinds) != 1 or not kinds <= {str, int, float}:
            raise TypeError(f"unsupported Literal {tp!r}; use values of one type (str/int/float)")
        return kinds.pop(), choices
    if tp in (int, float, str, Path):
        base = _CHECKED.get(tp, tp)
        if optional and tp is not str:
            # `--workers none` resets an Optional field that config.yml set.
            def convert(text: str) -> Any:
                return None if text.lower() in _NONE_STRINGS else base(text)

            convert.__name__ = tp.__name__  # argparse names it in "invalid int value"
            return convert, None
        return base, None
    raise TypeError(f"unsupported config field type {tp!r}")


def _finite_float(text: str) -> float:
    """argparse ``type`` for float fields: ``nan``, ``inf`` and ``1e999`` are refused."""
    value = float(text)  # ValueError -> argparse's "invalid float value: 'x'"
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _int64(text: str) -> int:
    """argparse ``type`` for int fields: values beyond 64 bits are refused."""
    value = int(text)  # ValueError -> argparse's "invalid int value: 'x'"
    if not INT_MIN <= value <= INT_MAX:
        raise argparse.ArgumentTypeError(
            f"must be an integer in the 64-bit range [-2^63, 2^63 - 1], got {text}"
        )
    return value


_finite_float.__name__ = "float"  # argparse: "invalid float value: 'x'"
_int64.__name__ = "int"
_CHECKED: dict[Any, Callable[[str], Any]] = {float: _finite_float, int: _int64}


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field[Any], tp: Any) -> None:
    inner, optional = _split_optional(tp)
    kwargs: dict[str, Any] = {"default": _UNSET, "help": _help_text(f)}
    if "metavar" in f.metadata:
        kwargs["metavar"] = f.metadata["metavar"]
    positional = bool(f.metadata.get("positional", False))
    if inner is bool:
        if positional:
            raise TypeError(f"{f.name}: bool fields cannot be positional")
        options = [f"--{s}" for n in _names(f) for s in _spellings(n)]
        negative = [f"--no-{n.replace('_', '-')}" for n in _names(f)]
        negative += [f"--no_{n.replace('-', '_')}" for n in _names(f)]
        parser.add_argument(
            *dict.fromkeys(options),
            dest=f.name,
            action=_BoolAction,
            negative=list(dict.fromkeys(negative)),
            **kwargs,
        )
        return
    if _is_list(inner):
        elem = _list_elem(inner)
        kwargs["type"], kwargs["choices"] = _scalar_converter(elem, optional=False)
        kwargs["nargs"] = f.metadata.get("nargs", "*" if positional else "+")
    else:
        kwargs["type"], kwargs["choices"] = _scalar_converter(inner, optional)
        if positional:
            kwargs["nargs"] = "?"
    if positional:
        parser.add_argument(f.name, **kwargs)
    else:
        options = [f"--{s}" for n in _names(f) for s in _spellings(n)]
        parser.add_argument(*dict.fromkeys(options), dest=f.name, **kwargs)


def build_parser(
    cls: type,
    *,
    prog: str | None = None,
    description: str | None = None,
    epilog: str | None = None,
    config_flag: bool = True,
) -> argparse.ArgumentParser:
    """Build an argparse parser with one flag per field of dataclass ``cls`` plus ``--config``.

    Every argument defaults to an internal sentinel, so only flags actually given show up
    in :func:`parse_config`'s CLI layer.

    Args:
        cls: The options dataclass.
        prog: Program name shown in usage and errors.
        description: Text shown at the top of ``--help``.
        epilog: Text shown at the end of ``--help``; with an epilog, both texts are printed
            as written (line breaks kept) instead of re-wrapped.
        config_flag: Add ``--config`` (a tool with a config.yml section); without it, a
            field may itself be named ``config``.

    Returns:
        The parser.

    Raises:
        TypeError: If a field has an unsupported type or is named ``config`` while
            ``config_flag`` adds that flag.
    """
    formatter = _PreformattedHelpFormatter if epilog else _HelpFormatter
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=functools.partial(formatter, max_help_position=40),
    )
    hints = _field_types(cls)
    for f in _init_fields(cls):
        if f.name == "config" and config_flag:
            raise TypeError(f"{cls.__name__}: field name 'config' is reserved for --config")
        _add_field(parser, f, hints[f.name])
    if config_flag:
        parser.add_argument(
            "--config",
            metavar="PATH",
            default=_UNSET,
            help=f"YAML file with one section per tool (default: ./{DEFAULT_CONFIG} if it exists)",
        )
    return parser
