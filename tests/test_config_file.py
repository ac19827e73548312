"""The shipped config.yml: every tool's defaults, loadable, and in sync with the dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from rlkit.config import SECTIONS, TOOLS, default_config_yaml, load_yaml_section

ROOT = Path(__file__).resolve().parents[1]


def test_config_yml_matches_the_dataclass_defaults():
    assert (ROOT / "config.yml").read_text() == default_config_yaml(), (
        "config.yml is out of date: regenerate it with python -m rlkit.config > config.yml"
    )


def test_every_section_is_present_and_loads_into_its_dataclass():
    data = yaml.safe_load((ROOT / "config.yml").read_text())
    assert set(data) == SECTIONS == set(TOOLS)
    for section, tool in TOOLS.items():
        cls = tool.options_class()
        values = load_yaml_section(ROOT / "config.yml", section, cls)
        assert cls(**values) == cls()
        assert set(values) == {f.name for f in dataclasses.fields(cls)}
