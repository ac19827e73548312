"""Tool options: one dataclass per tool, resolved as CLI > config.yml section > defaults.

Every rlkit tool describes its options as a dataclass. This module turns that dataclass into
an argparse parser (so flags and config keys cannot drift), reads the tool's section of
``config.yml``, merges the three layers and builds the dataclass, whose ``__post_init__``
does the checks::

    @dataclass
    class CollectConfig:
        episodes: int = field(default=100, metadata={"help": "number of episodes"})
        loading_workers: int = field(default=4, metadata={"aliases": ["world_loading_workers"]})
        data_dir: str = field(default="", metadata={"positional": True, "help": "input"})

    cfg = cli_main(CollectConfig, "collect", argv, prog="collect_demonstrations.py")

Flags. Field ``batch_size`` is ``--batch-size`` and ``--batch_size``; each metadata alias
adds both spellings too. Bools are ``--x/--no-x`` in every spelling (``--no_x`` included).
Lists take ``nargs`` from metadata (default ``"+"``), ``Literal`` fields become choices,
``X | None`` fields also accept ``none`` on the CLI for int/float/Path. Fields with
``metadata["positional"]`` are optional positionals, so config.yml can supply them too.

config.yml layout::

    collect:                    # one mapping per section in SECTIONS
      episodes: 200
      output: data/demos
    world_model:
      loading-workers: 8        # '-' or '_', or an alias (world_loading_workers)
    world_loading_workers: 8    # flat spelling of the seeds; see FLAT_KEYS

Flat keys. A key of :data:`FLAT_KEYS` (the seeds' ``world_loading_workers``) may stand at the
top level instead of inside its section. It takes effect when the section does not set the
same option; when both are set they must agree: different values are an error naming both
places and lines (the shipped config.yml sets ``world_model.loading_workers``, so set one of
the two, never both). Every tool checks this, so a conflict stops the first tool that reads
the file, not only the world model.

Nothing is taken silently. Unknown keys, unknown sections, duplicate keys or sections (YAML
would keep the last), wrongly typed values, NaN or infinite floats (``.nan``, ``--lr inf``),
integers outside the 64-bit range and files that are not UTF-8 raise :class:`ConfigError`
naming the file, the section, the key (and the line where known) and a "did you mean ..."
suggestion; a bad flag value is an argparse error naming the flag. A ``ValueError`` from the
dataclass's ``__post_init__`` names where the offending value came from:
``config.yml: collect.episodes: episodes must be >= 1, got -5`` or
``--episodes: episodes must be >= 1, got -5``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import logging
import math
import os
import shlex
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from rlkit.utils import write_text_atomic

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Known top-level sections of config.yml, one per tool.
SECTIONS: set[str] = {"collect", "bc", "rl", "world_model", "merge"}

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
    if default is dataclasses.MISSING:
        suffix = "(required)"
    elif isinstance(default, Path):
        suffix = f"(default: {str(default)!r})"
    else:
        suffix = f"(default: {default!r})"
    text = f.metadata.get("help")
    if not text:
        text = suffix
    elif "(default" not in text:  # the help already explains its default
        text = f"{text} {suffix}"
    return text.replace("%", "%%")  # argparse %-formats help strings


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
    cls: type, *, prog: str | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    """Build an argparse parser with one flag per field of dataclass ``cls`` plus ``--config``.

    Every argument defaults to an internal sentinel, so only flags actually given show up
    in :func:`parse_config`'s CLI layer.

    Args:
        cls: The options dataclass.
        prog: Program name shown in usage and errors.
        description: Text shown at the top of ``--help``.

    Returns:
        The parser.

    Raises:
        TypeError: If a field has an unsupported type or is named ``config``.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=functools.partial(_HelpFormatter, max_help_position=40),
    )
    hints = _field_types(cls)
    for f in _init_fields(cls):
        if f.name == "config":
            raise TypeError(f"{cls.__name__}: field name 'config' is reserved for --config")
        _add_field(parser, f, hints[f.name])
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=_UNSET,
        help=f"YAML file with one section per tool (default: ./{DEFAULT_CONFIG} if it exists)",
    )
    return parser


# --------------------------------------------------------------------------------------------
# config.yml
# --------------------------------------------------------------------------------------------


def _suggest(word: str, candidates: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1)
    if match:
        return f"did you mean '{match[0]}'?"
    return "valid: " + ", ".join(sorted(candidates))


class _DuplicateKey(yaml.constructor.ConstructorError):
    """Internal: a mapping in config.yml sets one key twice."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys and records each key's line.

    Plain PyYAML keeps the last of two equal keys, so a second ``collect:`` section or a
    repeated ``episodes:`` would silently replace the first. Keys that a ``<<`` merge brings
    in may still be overridden (that is what a merge is for).
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        #: key path (``("collect", "episodes")``) -> 1-based line of the key
        self.key_lines: dict[tuple[Any, ...], int] = {}
        self._key_paths: dict[int, tuple[Any, ...]] = {}

    def index_keys(self, node: yaml.Node, path: tuple[Any, ...] = ()) -> None:
        """Record the key path of every mapping under ``node`` (before construction)."""
        if id(node) in self._key_paths:  # an alias of a node seen already (or a recursive one)
            return
        self._key_paths[id(node)] = path
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                self.key_lines.setdefault((*path, name), key_node.start_mark.line + 1)
                self.index_keys(value_node, (*path, name))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.index_keys(item, (*path, i))

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if first is not None:
                path = self._key_paths.get(id(node), ())
                if not path:
                    what = "section" if key in SECTIONS else "top-level key"
                    where = f"duplicate {what} '{key}'"
                elif len(path) == 1:
                    where = f"duplicate key '{key}' in section '{path[0]}'"
                else:
                    where = f"duplicate key '{key}' in '{'.'.join(map(str, path))}'"
                raise _DuplicateKey(
                    None, None, f"line {line}: {where} (first set on line {first}); keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str | Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse a config file strictly: ``(data, key path -> line)``.

    Raises:
        ConfigError: The file cannot be read, is not UTF-8, is not valid YAML or repeats a key.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{raw[e.start]:02x} on line {line}); "
            "save it as UTF-8"
        ) from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        loader.index_keys(node)
        return loader.construct_document(node), loader.key_lines
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    finally:
        loader.dispose()


def _check_flat_keys(
    path: str | Path,
    data: dict[Any, Any],
    lines: dict[tuple[Any, ...], int],
    flat_fields: dict[str, tuple[str, str]],
) -> None:
    """Refuse a flat key whose section sets the same option to another value.

    ``flat_fields``: top-level key (``_`` spelling) -> (section, field) it sets, where the
    section may spell the field as ``field`` or as the flat key itself (``-`` or ``_``).
    """

    def at(*key: Any) -> str:
        line = lines.get(key)
        return f" (line {line})" if line else ""

    for flat_key, flat_value in data.items():
        norm = str(flat_key).replace("-", "_")
        if norm not in flat_fields:
            continue
        section, name = flat_fields[norm]
        body = data.get(section)
        if not isinstance(body, dict):
            continue
        for key, value in body.items():
            if str(key).replace("-", "_") not in (name, norm):
                continue
            if value != flat_value or isinstance(value, bool) != isinstance(flat_value, bool):
                raise ConfigError(
                    f"{path}: {flat_key}: {flat_value!r}{at(flat_key)} and "
                    f"{section}.{key}: {value!r}{at(section, key)} set the same option to "
                    "different values; keep only one of them"
                )


#: Where a value of the config.yml layer came from: field name -> ``section.key`` or the flat
#: key as written in the file (see :func:`_read_yaml_layer`).
_Origins = dict[str, str]


def _read_yaml_layer(path: str | Path, section: str, cls: type) -> tuple[dict[str, Any], _Origins]:
    """:func:`load_yaml_section` plus, per field, the key it was read from."""
    data, lines = _read_yaml(path)
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: top level must be a mapping of sections "
            f"({', '.join(sorted(SECTIONS))}), got {type(data).__name__}"
        )

    hints = _field_types(cls)
    fields = _init_fields(cls)
    key_to_field: dict[str, str] = {}
    for f in fields:
        for name in _names(f):
            key_to_field[name.replace("-", "_")] = f.name
    aliases = {name.replace("-", "_"): f.name for f in fields for name in _names(f)[1:]}
    known_sections = SECTIONS | {section}

    # Flat keys: the ones of FLAT_KEYS (any tool) and this tool's aliases at the top level.
    flat_fields = {**FLAT_KEYS, **{key: (section, name) for key, name in aliases.items()}}
    _check_flat_keys(path, data, lines, flat_fields)

    def coerce(label: str, field_name: str, value: Any) -> Any:
        tp = hints[field_name]
        try:
            return _coerce(value, tp)
        except _Mismatch as e:
            expected = e.args[0] if e.args else _type_name(tp)
            raise ConfigError(f"{path}: {label} = {value!r} must be {expected}") from None

    flat: dict[str, Any] = {}
    origins: _Origins = {}
    body: Any = None
    for key, value in data.items():
        norm = str(key).replace("-", "_")
        if key in known_sections:
            if key == section:
                body = value
        elif norm in aliases:
            if aliases[norm] in flat:
                raise ConfigError(f"{path}: '{aliases[norm]}' is set twice at the top level")
            flat[aliases[norm]] = coerce(str(key), aliases[norm], value)
            origins[aliases[norm]] = str(key)
        elif norm in FLAT_KEYS:
            continue  # a flat key of another tool
        else:
            raise ConfigError(
                f"{path}: unknown top-level key '{key}' (sections: "
                f"{', '.join(sorted(known_sections))}); "
                f"{_suggest(str(key), sorted(known_sections))}"
            )

    if body is None:
        return flat, origins
    if not isinstance(body, dict):
        raise ConfigError(
            f"{path}: section '{section}' must be a mapping of options, "
            f"got {type(body).__name__} {body!r}"
        )
    values: dict[str, Any] = {}
    for key, value in body.items():
        norm = str(key).replace("-", "_")
        if norm not in key_to_field:
            raise ConfigError(
                f"{path}: unknown key '{key}' in section '{section}'; "
                f"{_suggest(norm, [f.name for f in fields])}"
            )
        name = key_to_field[norm]
        if name in values:
            raise ConfigError(f"{path}: '{name}' is set twice in section '{section}'")
        values[name] = coerce(f"{section}.{key}", name, value)
        origins[name] = f"{section}.{key}"
    # A flat key and its section agree here (_check_flat_keys), so the order does not matter.
    return {**flat, **values}, origins


def load_yaml_section(path: str | Path, section: str, cls: type) -> dict[str, Any]:
    """Read ``section`` of a config.yml, validated against dataclass ``cls``.

    Keys may use ``-`` or ``_`` or a field alias. Top-level keys must be sections in
    :data:`SECTIONS` (or ``section`` itself), an alias of ``cls`` (flat spelling) or a key of
    :data:`FLAT_KEYS`; a flat key and its section may both be set only to the same value.

    Args:
        path: The YAML file.
        section: The tool's section name, e.g. ``"collect"``.
        cls: The tool's options dataclass.

    Returns:
        Field name -> value, coerced to the field type (int -> float, str -> Path).
        A missing section gives an empty dict.

    Raises:
        ConfigError: If the file cannot be read, is not UTF-8 or not valid YAML, repeats a
            key, or a key or value is invalid (NaN and infinite floats included).
    """
    return _read_yaml_layer(path, section, cls)[0]


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def parse_config(
    cls: type[T],
    section: str,
    argv: list[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
) -> T:
    """Resolve a tool's options: CLI flags > config.yml section > dataclass defaults.

    Args:
        cls: The options dataclass.
        section: Its config.yml section, e.g. ``"collect"``.
        argv: Command-line arguments without the program name (default: ``sys.argv[1:]``).
        prog: Program name for usage and errors.
        description: Text shown at the top of ``--help``.

    Returns:
        The constructed dataclass.

    Raises:
        ConfigError: For a missing ``--config`` file, a bad config.yml, a missing required
            value, or a ``ValueError``/``TypeError`` from ``cls.__post_init__`` (prefixed with
            where each offending value came from: ``FILE: section.key`` or the flag).
        SystemExit: From argparse, for bad flags (code 2) or ``--help`` (code 0).
    """
    parser = build_parser(cls, prog=prog, description=description)
    args = sys.argv[1:] if argv is None else list(argv)
    given = {k: v for k, v in vars(parser.parse_args(args)).items() if v is not _UNSET}

    config_path: Path | None = None
    if "config" in given:
        config_path = Path(given.pop("config"))
        if not config_path.is_file():
            raise ConfigError(f"config file {str(config_path)!r} does not exist")
    elif Path(DEFAULT_CONFIG).is_file():
        config_path = Path(DEFAULT_CONFIG)
    from_yaml: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if config_path is not None:
        from_yaml, keys = _read_yaml_layer(config_path, section, cls)
        origins = {name: f"{config_path}: {key}" for name, key in keys.items()}
        logger.info("using %s (section '%s')", config_path, section)
    origins.update(_flag_origins(parser, args, given))

    merged = {**from_yaml, **given}
    for f in _init_fields(cls):
        if f.name not in merged and _default_of(f) is dataclasses.MISSING:
            how = f.name if f.metadata.get("positional") else f"--{f.name.replace('_', '-')}"
            raise ConfigError(
                f"{f.name} is required: pass {how} or set '{f.name}' in section "
                f"'{section}' of {config_path or DEFAULT_CONFIG}"
            )
    try:
        return cls(**merged)
    except (ValueError, TypeError) as e:
        culprits = _culprits(cls, merged, e)
        if not culprits:
            raise ConfigError(str(e)) from e
        where = " and ".join(origins.get(name, name) for name in culprits)
        raise ConfigError(f"{where}: {e}") from e


def _flag_origins(
    parser: argparse.ArgumentParser, argv: Sequence[str], given: dict[str, Any]
) -> dict[str, str]:
    """Field name -> the flag that set it, spelled as typed (the last one wins, as in
    argparse); positionals are named ``argument NAME``."""
    by_option = parser._option_string_actions  # option string -> action (argparse's own map)
    out: dict[str, str] = {}
    for token in argv:
        if token == "--":
            break
        action = by_option.get(token.split("=", 1)[0]) if token.startswith("-") else None
        if action is not None and action.dest in given:
            out[action.dest] = token.split("=", 1)[0]
    for name in given:
        if name not in out:
            action = next((a for a in parser._actions if a.dest == name), None)
            if action is not None and action.option_strings:
                out[name] = action.option_strings[0]  # an abbreviation was typed
            else:
                out[name] = f"argument {name}"
    return out


def _culprits(cls: type, values: dict[str, Any], error: Exception) -> list[str]:
    """The given fields that cause ``error`` in ``cls(**values)``.

    A field is to blame when building the dataclass without it (its default instead) no
    longer raises the same error. This needs no parsing of the message and also finds both
    fields of a cross-field check (``--resume`` with ``--overwrite``). ``__post_init__`` must
    be free of side effects, as config checks are.
    """
    defaults = {f.name: _default_of(f) for f in _init_fields(cls)}
    blamed = []
    for name in values:
        if defaults.get(name, dataclasses.MISSING) is dataclasses.MISSING:
            continue  # required: there is nothing to fall back to
        rest = {k: v for k, v in values.items() if k != name}
        try:
            cls(**rest)
        except (ValueError, TypeError) as e:
            if type(e) is type(error) and str(e) == str(error):
                continue
        blamed.append(name)
    return blamed


def cli_main(
    cls: type[T],
    section: str,
    argv: list[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
) -> T:
    """:func:`parse_config` for a tool's ``main``: config errors print and exit with code 2.

    Args:
        cls: The options dataclass.
        section: Its config.yml section.
        argv: Command-line arguments without the program name (default: ``sys.argv[1:]``).
        prog: Program name for usage and errors (default: basename of ``sys.argv[0]``).
        description: Text shown at the top of ``--help``.

    Returns:
        The constructed dataclass.

    Raises:
        SystemExit: Code 2 on any configuration error (argparse's own errors included).
    """
    try:
        return parse_config(cls, section, argv, prog=prog, description=description)
    except ConfigError as e:
        name = prog or os.path.basename(sys.argv[0])
        print(f"{name}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Convert a field value to YAML-safe builtins (Path -> str, tuple -> list)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Return the init fields of dataclass instance ``cfg`` as YAML-safe builtins.

    Args:
        cfg: A config dataclass instance.

    Returns:
        Field name -> value, in declaration order.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass instance, got {cfg!r}")
    return {f.name: _plain(getattr(cfg, f.name)) for f in _init_fields(type(cfg))}


def command_line(argv: list[str] | None = None) -> str:
    """The shell-quoted command that started this run, e.g. ``python train_bc.py --epochs 3``.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        ``python <script> <args>`` for a ``.py`` script, ``<program> <args>`` otherwise
        (console scripts); never the interpreter's absolute path.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    program = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    line = shlex.join([program, *args])
    return f"python {line}" if program.endswith(".py") else line


def run_config_files(cfg: Any, *, section: str, argv: list[str] | None = None) -> dict[str, str]:
    """The texts of ``config.resolved.yml`` and ``command.txt`` for a run.

    ``config.resolved.yml`` holds ``{section: {every field}}``, so it can be passed back with
    ``--config`` to repeat the run. Tools that write their output atomically as one folder
    put these files inside it before the rename.
    """
    resolved = yaml.safe_dump({section: config_to_dict(cfg)}, sort_keys=False)
    return {"config.resolved.yml": resolved, "command.txt": command_line(argv) + "\n"}


def save_run_config(
    cfg: Any, out_dir: str | Path, *, section: str, argv: list[str] | None = None
) -> None:
    """Write ``config.resolved.yml`` and ``command.txt`` into a run directory, atomically.

    Args:
        cfg: The resolved config dataclass instance.
        out_dir: The run directory; created if missing.
        section: The config.yml section of this tool.
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in run_config_files(cfg, section=section, argv=argv).items():
        write_text_atomic(out / name, text)


# --------------------------------------------------------------------------------------------
# The root config.yml
# --------------------------------------------------------------------------------------------

#: Section -> "module:Dataclass" of every tool that has landed.
TOOLS: dict[str, str] = {
    "collect": "rlkit.collect:CollectConfig",
    "bc": "rlkit.bc:BCConfig",
    "rl": "rlkit.rl:RLConfig",
    "world_model": "rlkit.planet.train:WorldModelConfig",
    "merge": "rlkit.lerobot.merge:MergeConfig",
}

#: Order of the sections in config.yml and the script each belongs to.
SECTION_SCRIPTS: dict[str, str] = {
    "collect": "collect_demonstrations.py",
    "bc": "train_bc.py",
    "rl": "train_rl.py",
    "world_model": "train_world_model.py",
    "merge": "merge_lerobot_dataset.py",
}


def _tool_class(section: str) -> type | None:
    if section not in TOOLS:
        return None
    module, _, name = TOOLS[section].partition(":")
    import importlib

    return getattr(importlib.import_module(module), name)


def default_config_yaml() -> str:
    """The text of the root ``config.yml``: every tool's defaults with a one-line comment.

    ``tests/test_config_file.py`` checks that the shipped file equals this text, so the file
    cannot drift from the dataclasses.
    """
    lines = [
        "# rlkit configuration: one section per tool.",
        "# Precedence: command-line flag > this file > built-in default.",
        "# Keys may be written with '-' or '_' (batch-size == batch_size); null = automatic.",
        "# Every run saves the options it used as config.resolved.yml in its output folder.",
    ]
    for section, script in SECTION_SCRIPTS.items():
        lines.append("")
        cls = _tool_class(section)
        if cls is None:
            lines.append(f"# {script}: not available yet")
            lines.append(f"{section}: {{}}")
            continue
        lines.append(f"# {script}")
        lines.append(f"{section}:")
        entries = []
        for f in _init_fields(cls):
            value = yaml.safe_dump(_plain(_default_of(f)), default_flow_style=True).strip()
            value = value.removesuffix("\n...").strip()
            text = f.metadata.get("help") or f.name.replace("_", " ")
            entries.append((f"  {f.name}: {value}", text))
        width = max(len(e[0]) for e in entries) + 2
        lines.extend(f"{key:<{width}}# {text}" for key, text in entries)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m rlkit.config > config.yml
    print(default_config_yaml(), end="")
