"""CLI > config.yml > defaults, errors that name their source, and the run's saved config."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from rlkit.config.fields import _UNSET, DEFAULT_CONFIG, ConfigError, T, _default_of, _init_fields
from rlkit.config.parser import build_parser
from rlkit.config.yaml_file import _read_yaml_layer
from rlkit.utils import write_text_atomic

logger = logging.getLogger("rlkit.config")

# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def parse_config(
    cls: type[T],
    section: str | None,
    argv: list[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    epilog: str | None = None,
) -> T:
    """Resolve a tool's options: CLI flags > config.yml section > dataclass defaults.

    Args:
        cls: The options dataclass.
        section: Its config.yml section, e.g. ``"collect"``; ``None`` for a command without
            one (the pipeline): no ``--config`` flag, no file read, CLI flags > defaults.
        argv: Command-line arguments without the program name (default: ``sys.argv[1:]``).
        prog: Program name for usage and errors.
        description: Text shown at the top of ``--help``.
        epilog: Text shown at the end of ``--help`` (see :func:`build_parser`).

    Returns:
        The constructed dataclass.

    Raises:
        ConfigError: For a missing ``--config`` file, a bad config.yml, a missing required
            value, or a ``ValueError``/``TypeError`` from ``cls.__post_init__`` (prefixed with
            where each offending value came from: ``FILE: section.key`` or the flag).
        SystemExit: From argparse, for bad flags (code 2) or ``--help`` (code 0).
    """
    parser = build_parser(
        cls, prog=prog, description=description, epilog=epilog, config_flag=section is not None
    )
    args = sys.argv[1:] if argv is None else list(argv)
    given = {k: v for k, v in vars(parser.parse_args(args)).items() if v is not _UNSET}

    config_path: Path | None = None  # stays None without a section: no file layer
    if section is not None and "config" in given:
        config_path = Path(given.pop("config"))
        if not config_path.is_file():
            raise ConfigError(f"config file {str(config_path)!r} does not exist")
    elif section is not None and Path(DEFAULT_CONFIG).is_file():
        config_path = Path(DEFAULT_CONFIG)
    from_yaml: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if config_path is not None and section is not None:
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
    section: str | None,
    argv: list[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    epilog: str | None = None,
) -> T:
    """:func:`parse_config` for a tool's ``main``: config errors print and exit with code 2.

    Args:
        cls: The options dataclass.
        section: Its config.yml section (``None``: none, see :func:`parse_config`).
        argv: Command-line arguments without the program name (default: ``sys.argv[1:]``).
        prog: Program name for usage and errors (default: basename of ``sys.argv[0]``).
        description: Text shown at the top of ``--help``.
        epilog: Text shown at the end of ``--help``.

    Returns:
        The constructed dataclass.

    Raises:
        SystemExit: Code 2 on any configuration error (argparse's own errors included).
    """
    try:
        return parse_config(cls, section, argv, prog=prog, description=description, epilog=epilog)
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
        ``python <script> <args>`` for a ``.py`` script, ``python -m rlkit.cli.<tool>`` for
        a tool run as a module (how the pipeline starts its stages), ``<program> <args>``
        otherwise (console scripts); never the interpreter's absolute path.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    program = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    path = Path(program)
    if path.suffix == ".py" and path.parent.name == "cli" and path.parent.parent.name == "rlkit":
        return shlex.join(["python", "-m", f"rlkit.cli.{path.stem}", *args])
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
