"""Reading a tool's section of config.yml: strict YAML, flat keys, typed values."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from rlkit.config.fields import (
    FLAT_KEYS,
    SECTIONS,
    ConfigError,
    _coerce,
    _field_types,
    _init_fields,
    _Mismatch,
    _names,
    _type_name,
)

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
