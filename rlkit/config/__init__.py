"""Tool options: one dataclass per tool, resolved as CLI > config.yml section > defaults.

Every rlkit tool describes its options as a dataclass. This module turns that dataclass into
an argparse parser (so flags and config keys cannot drift), reads the tool's section of
``config.yml``, merges the three layers and builds the dataclass. Each option is declared
with :func:`~rlkit.config.fields.opt` (default, help, bounds); ``__post_init__`` calls
:func:`~rlkit.config.fields.check_fields` for the bounds, then checks what depends on several
options::

    @dataclass
    class CollectConfig:
        episodes: int = opt(100, "number of episodes", bounds="[1, 1e7]")
        loading_workers: int = opt(4, "threads", aliases=["world_loading_workers"])
        data_dir: str = opt("", "input", positional=True)

        def __post_init__(self) -> None:
            check_fields(self)

    cfg = cli_main(CollectConfig, "collect", argv, prog="collect_demonstrations.py")

Flags. Field ``batch_size`` is ``--batch-size`` and ``--batch_size``; each metadata alias
adds both spellings too. Bools are ``--x/--no-x`` in every spelling (``--no_x`` included).
Lists take ``nargs`` from metadata (default ``"+"``), ``Literal`` fields become choices,
``X | None`` fields also accept ``none`` on the CLI for int/float/Path. Fields with
``metadata["positional"]`` are optional positionals, so config.yml can supply them too.

config.yml layout::

    collect:                    # one mapping per tool in rlkit.tools.TOOLS
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
``config.yml: collect.episodes: episodes must be in [1, 1e7], got -5`` or
``--episodes: episodes must be in [1, 1e7], got -5``.
"""

from __future__ import annotations

import yaml

from rlkit.config.fields import (
    DEFAULT_CONFIG,
    FLAT_KEYS,
    SECTIONS,
    ConfigError,
    _default_of,
    _init_fields,
)
from rlkit.config.parser import build_parser
from rlkit.config.resolve import (
    _plain,
    cli_main,
    command_line,
    config_to_dict,
    parse_config,
    run_config_files,
    save_run_config,
)
from rlkit.config.yaml_file import load_yaml_section
from rlkit.tools import TOOLS

__all__ = [
    "DEFAULT_CONFIG",
    "FLAT_KEYS",
    "SECTIONS",
    "TOOLS",
    "ConfigError",
    "build_parser",
    "cli_main",
    "command_line",
    "config_to_dict",
    "default_config_yaml",
    "load_yaml_section",
    "parse_config",
    "run_config_files",
    "save_run_config",
]


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
    for section, tool in TOOLS.items():
        cls = tool.options_class()
        lines += ["", f"# {tool.script}", f"{section}:"]
        entries = []
        for f in _init_fields(cls):
            value = yaml.safe_dump(_plain(_default_of(f)), default_flow_style=True).strip()
            value = value.removesuffix("\n...").strip()
            text = f.metadata.get("help") or f.name.replace("_", " ")
            entries.append((f"  {f.name}: {value}", text))
        width = max(len(e[0]) for e in entries) + 2
        lines.extend(f"{key:<{width}}# {text}" for key, text in entries)
    return "\n".join(lines) + "\n"
