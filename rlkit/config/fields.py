"""Config fields: their declaration (:func:`opt`), types, names, defaults, help and bounds
(:func:`check_fields`), and YAML value coercion."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from rlkit.tools import TOOLS

T = TypeVar("T")

#: Known top-level sections of config.yml, one per tool.
SECTIONS: set[str] = set(TOOLS)

#: Flat top-level keys (the seeds' spellings) -> (section, field) that owns them as an alias.
#: Other tools skip these keys instead of rejecting them, so one config.yml serves every tool,
#: but every tool refuses a flat key that contradicts its section (see the module docstring).
FLAT_KEYS: dict[str, tuple[str, str]] = {
    "world_loading_workers": ("world_model", "loading_workers"),
}

#: Integers must fit in 64 bits: numpy and torch overflow on anything larger.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

DEFAULT_CONFIG = "config.yml"


class ConfigError(Exception):
    """A user-facing configuration error; the CLI prints ``error: <msg>`` and exits 2."""


class _Unset:
    """Sentinel default for argparse: tells 'flag not given' apart from any real value."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()
_NONE_STRINGS = frozenset({"none", "null"})


# --------------------------------------------------------------------------------------------
# Declaring options and checking their bounds
# --------------------------------------------------------------------------------------------


def opt(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    bounds: str | None = None,
    why: str = "",
    **metadata: Any,
) -> Any:
    """One option of a tool's dataclass: its default, ``--help`` text and bounds.

    ``bounds`` is an interval as a reader writes it, ``"[1, 1e6]"``, ``"(0, 1]"``,
    ``"[0, 2^32)"``: :func:`check_fields` refuses a value outside it (each item of a list),
    naming the option, the interval, ``why`` and the value. A list default is copied for each
    instance. Other keywords (``nargs``, ``aliases``, ``positional``, ``metavar``) go to the
    parser through the field's metadata.

    Example::

        epochs: int = opt(50, "training epochs", bounds="[1, 1e6]")
    """
    if help:
        metadata["help"] = help
    if bounds is not None:
        _interval(bounds)  # a typo in the code fails at import, not at the user
        metadata["bounds"] = bounds
        metadata["why"] = why
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_INTERVAL_RE = re.compile(r"^([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])$")


def _number(text: str) -> float:
    base, _, exp = text.partition("^")
    return float(base) ** float(exp) if exp else float(text)


def _interval(text: str) -> tuple[float, float, bool, bool]:
    """``"[1, 1e6)"`` -> ``(1.0, 1e6, True, False)``: bounds and whether each is included."""
    m = _INTERVAL_RE.match(text)
    if m is None:
        raise ValueError(f"bounds {text!r} is not an interval such as '[1, 1e6]' or '(0, 1]'")
    return _number(m[2]), _number(m[3]), m[1] == "[", m[4] == "]"


def _inside(value: float, interval: tuple[float, float, bool, bool]) -> bool:
    lo, hi, lo_in, hi_in = interval
    above = value >= lo if lo_in else value > lo
    below = value <= hi if hi_in else value < hi
    return above and below  # False for NaN


def check_fields(cfg: Any) -> None:
    """Raise ``ValueError`` for the first field of dataclass ``cfg`` outside its
    :func:`opt` bounds: ``"epochs must be in [1, 1e6], got 0"``. ``None`` (the field's
    automatic default) is always accepted. Each tool's ``__post_init__`` calls this first,
    then checks what depends on several options."""
    for f in dataclasses.fields(cfg):
        text = f.metadata.get("bounds")
        value = getattr(cfg, f.name)
        if text is None or value is None:
            continue
        interval = _interval(text)
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(_inside(v, interval) for v in items):
            why = f" ({f.metadata['why']})" if f.metadata.get("why") else ""
            raise ValueError(f"{f.name} must be in {text}{why}, got {value}")


# --------------------------------------------------------------------------------------------
# Type analysis
# --------------------------------------------------------------------------------------------


def _field_types(cls: type) -> dict[str, Any]:
    """Resolve the annotations of dataclass ``cls`` (string annotations included)."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        hints: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if isinstance(f.type, str):
                raise TypeError(
                    f"{cls.__name__}.{f.name}: cannot resolve type annotation {f.type!r}; "
                    "define the dataclass at module level"
                ) from None
            hints[f.name] = f.type
        return hints


def _init_fields(cls: type) -> list[dataclasses.Field[Any]]:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")
    return [f for f in dataclasses.fields(cls) if f.init]


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """Return ``(inner_type, is_optional)`` for ``X | None``; other unions are unsupported."""
    if get_origin(tp) in (Union, types.UnionType):
        args = get_args(tp)
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union type {tp!r}; only 'X | None' is supported")
        return inner[0], len(inner) != len(args)
    return tp, False


def _is_list(tp: Any) -> bool:
    return tp is list or get_origin(tp) is list


def _list_elem(tp: Any) -> Any:
    args = get_args(tp)
    return args[0] if args else str


def _type_name(tp: Any) -> str:
    """Human-readable name of a field type, for error messages."""
    inner, optional = _split_optional(tp)
    if get_origin(inner) is Literal:
        name = "one of " + ", ".join(repr(c) for c in get_args(inner))
    elif _is_list(inner):
        name = f"a list of {_type_name(_list_elem(inner))}"
    elif inner is Path:
        name = "a path (str)"
    else:
        name = getattr(inner, "__name__", repr(inner))
    return f"{name} or null" if optional else name


class _Mismatch(Exception):
    """Internal: a YAML value does not match the field type.

    ``args[0]``, when given, replaces the type name in the message (``a finite float``).
    """


def _coerce(value: Any, tp: Any) -> Any:
    """Check a YAML value against ``tp`` and convert it (int -> float, str -> Path).

    Raises:
        _Mismatch: if ``value`` does not fit ``tp``.
    """
    inner, optional = _split_optional(tp)
    if value is None:
        if optional:
            return None
        raise _Mismatch
    if get_origin(inner) is Literal:
        # Compare types too: True == 1 must not select the choice 1.
        if any(type(value) is type(c) and value == c for c in get_args(inner)):
            return value
        raise _Mismatch
    if _is_list(inner):
        if not isinstance(value, list):
            raise _Mismatch
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_coerce(item, _list_elem(inner)))
            except _Mismatch as e:
                if not e.args:
                    raise
                raise _Mismatch(f"{_type_name(inner)} (item {i} must be {e.args[0]})") from None
        return out
    if inner is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT_MIN <= value <= INT_MAX:
                raise _Mismatch("an int within 64 bits, in [-2^63, 2^63 - 1]")
            return value
        raise _Mismatch
    if inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float range
                number = math.inf
            if not math.isfinite(number):
                raise _Mismatch("a finite float, not NaN or infinite")
            return number
        raise _Mismatch
    if inner is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if inner is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _Mismatch
    raise TypeError(f"unsupported config field type {tp!r}")


def _spellings(name: str) -> list[str]:
    """``batch_size`` -> ``["batch-size", "batch_size"]`` (kebab first, deduplicated)."""
    return list(dict.fromkeys([name.replace("_", "-"), name.replace("-", "_")]))


def _names(f: dataclasses.Field[Any]) -> list[str]:
    """The field name followed by its metadata aliases."""
    aliases = f.metadata.get("aliases", ())
    if isinstance(aliases, str):
        aliases = [aliases]
    return [f.name, *aliases]


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _help_text(f: dataclasses.Field[Any]) -> str:
    default = _default_of(f)
    bounds = f"; range {f.metadata['bounds']}" if f.metadata.get("bounds") else ""
    if default is dataclasses.MISSING:
        suffix = "(required)"
    elif isinstance(default, Path):
        suffix = f"(default: {str(default)!r}{bounds})"
    else:
        suffix = f"(default: {default!r}{bounds})"
    text = f.metadata.get("help")
    if not text:
        text = suffix
    elif "(default" not in text:
        text = f"{text} {suffix}"
    elif bounds:  # the help already explains its default
        text = f"{text} (range {f.metadata['bounds']})"
    return text.replace("%", "%%")  # argparse %-formats help strings
