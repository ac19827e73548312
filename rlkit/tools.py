"""The one table of rlkit's tools: config section, root script, CLI module, options class.

config.yml's sections, ``--help`` program names, the pipeline's stages and the shipped
config.yml are all read from :data:`TOOLS`, so adding a tool is one row here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["TOOLS", "Tool"]


@dataclass(frozen=True)
class Tool:
    """One command-line tool of rlkit."""

    section: str  # its section of config.yml
    script: str  # the root script users run (also the program name in messages)
    module: str  # ``python -m <module>`` runs it from an installed rlkit
    options: str  # "module:Dataclass" of its options

    def options_class(self) -> type:
        module, _, name = self.options.partition(":")
        return getattr(importlib.import_module(module), name)


#: Section -> tool, in the order of config.yml.
TOOLS: dict[str, Tool] = {
    t.section: t
    for t in (
        Tool("collect", "collect_demonstrations.py", "rlkit.cli.collect_demonstrations",
             "rlkit.collect:CollectConfig"),
        Tool("bc", "train_bc.py", "rlkit.cli.train_bc", "rlkit.bc:BCConfig"),
        Tool("rl", "train_rl.py", "rlkit.cli.train_rl", "rlkit.rl:RLConfig"),
        Tool("world_model", "train_world_model.py", "rlkit.cli.train_world_model",
             "rlkit.planet.config:WorldModelConfig"),
        Tool("merge", "merge_lerobot_dataset.py", "rlkit.cli.merge_lerobot_dataset",
             "rlkit.lerobot.merge:MergeConfig"),
    )
}  # fmt: skip
