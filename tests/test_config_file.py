"""The shipped config.yml: every tool's defaults, loadable, and in sync with the dataclasses."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import yaml

from rlkit.config import SECTION_SCRIPTS, SECTIONS, TOOLS, default_config_yaml, load_yaml_section

ROOT = Path(__file__).resolve().parents[1]


def test_config_yml_matches_the_dataclass_defaults():
    assert (ROOT / "config.yml").read_text() == default_config_yaml(), (
        "config.yml is out of date: regenerate it with python -m rlkit.config > config.yml"
    )


def test_every_section_is_present_and_loads_into_its_dataclass():
    data = yaml.safe_load((ROOT / "config.yml").read_text())
    assert set(data) == SECTIONS == set(SECTION_SCRIPTS)
    for section, target in TOOLS.items():
        module, _, name = target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        values = load_yaml_section(ROOT / "config.yml", section, cls)
        assert cls(**values) == cls()
        assert set(values) == {f.name for f in dataclasses.fields(cls)}
