"""config.yml and flag faults that used to pass silently or as a traceback ("nothing lost,
nothing silent"): duplicate keys, non-UTF-8 files, errors that did not say where the value
came from, the seeds' flat key losing to the shipped section, NaN/inf and huge numbers."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rlkit.collect import CollectConfig
from rlkit.config import TOOLS, ConfigError, cli_main, load_yaml_section, parse_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Opts:
    episodes: int = 10
    noise: float = 0.1
    weights: list[float] = field(default_factory=lambda: [1.0])
    max_minutes: float | None = None
    resume: bool = False
    overwrite: bool = False
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.resume and self.overwrite:
            raise ValueError("pass either --resume or --overwrite, not both")


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # never read the repository's config.yml by accident


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path, section: str = "collect", cls: type = Opts) -> str:
    with pytest.raises(ConfigError) as exc:
        load_yaml_section(path, section, cls)
    return str(exc.value)


# -- A1: duplicate keys and sections ----------------------------------------------------------


def test_duplicate_key_in_a_section_is_refused_with_file_section_key_and_lines(tmp_path):
    path = _write(tmp_path / "c.yml", "collect:\n  episodes: 1\n  noise: 0.2\n  episodes: 5\n")
    msg = _error(path)
    for part in (str(path), "duplicate key 'episodes'", "section 'collect'", "line 4", "line 2"):
        assert part in msg, msg


def test_duplicate_section_is_refused(tmp_path):
    text = "collect:\n  episodes: 3\nbc:\n  epochs: 2\ncollect:\n  noise: 0.2\n"
    msg = _error(_write(tmp_path / "c.yml", text))
    assert "duplicate section 'collect'" in msg and "line 5" in msg and "line 1" in msg, msg


def test_duplicate_key_of_another_tools_section_stops_every_tool(tmp_path, capsys):
    _write(tmp_path / "config.yml", "collect:\n  episodes: 3\nbc:\n  epochs: 1\n  epochs: 2\n")
    with pytest.raises(SystemExit) as exc:
        cli_main(CollectConfig, "collect", [], prog="collect_demonstrations.py")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "config.yml: line 5: duplicate key 'epochs' in section 'bc'" in err, err


def test_a_merge_key_may_still_be_overridden(tmp_path):
    path = _write(tmp_path / "c.yml", "collect:\n  <<: {episodes: 3, noise: 0.5}\n  episodes: 4\n")
    assert load_yaml_section(path, "collect", Opts) == {"episodes": 4, "noise": 0.5}


# -- A2: encoding -----------------------------------------------------------------------------


def test_non_utf8_file_is_one_clear_config_error(tmp_path, capsys):
    path = _write(tmp_path / "config.yml", "collect:\n  output: café\n".encode("latin-1"))
    msg = _error(path)
    assert str(path) in msg and "UTF-8" in msg and "line 2" in msg, msg
    with pytest.raises(SystemExit) as exc:
        cli_main(Opts, "collect", [], prog="tool")
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("tool: error: config.yml: not a UTF-8 text file")


# -- A3: __post_init__ errors name where the value came from ----------------------------------


def test_bad_value_from_config_yml_names_the_file_and_key(tmp_path):
    _write(tmp_path / "config.yml", "collect:\n  episodes: -5\n  noise: 0.3\n")
    with pytest.raises(ConfigError) as exc:
        parse_config(CollectConfig, "collect", [])  # the real tool's own check
    assert str(exc.value).startswith("config.yml: collect.episodes: episodes must be in [1, 1e7] (")
    assert str(exc.value).endswith("), got -5")


def test_bad_value_from_a_flag_names_the_flag_as_typed(tmp_path):
    _write(tmp_path / "config.yml", "collect:\n  episodes: 3\n  batch-size: 0\n")
    with pytest.raises(ConfigError) as exc:
        parse_config(Opts, "collect", ["--episodes=0", "--batch-size", "4"])
    assert str(exc.value) == "--episodes: episodes must be >= 1, got 0"
    with pytest.raises(ConfigError) as exc:  # the file's bad value, spelled as in the file
        parse_config(Opts, "collect", [])
    assert str(exc.value) == "config.yml: collect.batch-size: batch_size must be >= 1, got 0"
    with pytest.raises(ConfigError) as exc:
        parse_config(Opts, "collect", ["--batch_size", "-1"])
    assert str(exc.value).startswith("--batch_size: batch_size must be >= 1")


def test_cross_field_error_names_both_sources(tmp_path):
    path = _write(tmp_path / "my.yml", "collect:\n  resume: true\n")
    with pytest.raises(ConfigError) as exc:
        parse_config(Opts, "collect", ["--config", str(path), "--overwrite", "--episodes", "2"])
    assert str(exc.value) == (
        f"{path}: collect.resume and --overwrite: pass either --resume or --overwrite, not both"
    )


# -- A4: the seeds' flat key against the shipped config.yml -----------------------------------


def _shipped_config_plus(tmp_path: Path, extra: str) -> Path:
    shipped = (ROOT / "config.yml").read_text(encoding="utf-8")
    assert "\n  loading_workers: 4 " in shipped  # the shape this test is about
    return _write(tmp_path / "config.yml", extra + shipped)


def test_flat_world_loading_workers_against_the_shipped_section_is_an_error(tmp_path, capsys):
    from rlkit.planet.train import WorldModelConfig

    path = _shipped_config_plus(tmp_path, "world_loading_workers: 8  # as the seeds say\n")
    lines = path.read_text().splitlines()
    section_line = 1 + next(i for i, x in enumerate(lines) if x.startswith("  loading_workers:"))
    with pytest.raises(ConfigError) as exc:
        parse_config(WorldModelConfig, "world_model", [])
    msg = str(exc.value)
    assert msg.startswith(f"{path.name}: world_loading_workers: 8 (line 1) and "), msg
    for part in (
        f"world_model.loading_workers: 4 (line {section_line})",
        "different values",
    ):
        assert part in msg, msg
    # Not only the world model: the first tool of the pipeline already stops.
    with pytest.raises(SystemExit) as e:
        cli_main(CollectConfig, "collect", [], prog="collect_demonstrations.py")
    assert e.value.code == 2 and "world_loading_workers: 8" in capsys.readouterr().err


def test_flat_world_loading_workers_takes_effect_when_the_section_agrees_or_is_silent(tmp_path):
    from rlkit.planet.train import WorldModelConfig

    shipped = (ROOT / "config.yml").read_text(encoding="utf-8")
    path = _write(
        tmp_path / "config.yml",
        "world_loading_workers: 8\n" + shipped.replace("\n  loading_workers: 4 ", "\n  # ", 1),
    )
    assert parse_config(WorldModelConfig, "world_model", []).loading_workers == 8
    _write(path, "world_loading_workers: 8\n" + shipped.replace("workers: 4 ", "workers: 8 ", 1))
    assert parse_config(WorldModelConfig, "world_model", []).loading_workers == 8
    cfg = parse_config(WorldModelConfig, "world_model", ["--loading-workers", "2"])
    assert cfg.loading_workers == 2  # the flag wins over both


# -- A5: every float finite, every int within 64 bits -----------------------------------------


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e999"])
@pytest.mark.parametrize("flag", ["--noise", "--max-minutes", "--weights"])
def test_non_finite_float_flags_exit_2_naming_the_flag(flag, text, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(Opts, "collect", [f"{flag}={text}"], prog="tool")  # = for "-inf"
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "must be a finite number" in err, err


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("noise: .nan", "collect.noise = nan"),
        ("noise: .inf", "collect.noise = inf"),
        ("noise: -.Inf", "collect.noise = -inf"),
        ("noise: 1.0e+999", "collect.noise = inf"),
        pytest.param(f"noise: {10**400}", "collect.noise = 1000", id="int-beyond-float"),
        ("max_minutes: .nan", "collect.max_minutes = nan"),
        ("weights: [1.0, .nan]", "collect.weights = [1.0, nan] must be a list of float (item 1"),
    ],
)
def test_non_finite_floats_in_yaml_are_refused(tmp_path, value, label):
    msg = _error(_write(tmp_path / "c.yml", f"collect:\n  {value}\n"))
    assert label in msg and "must be a finite float" in msg, msg


def test_ints_beyond_64_bits_are_refused(tmp_path, capsys):
    huge = str(2**63)
    with pytest.raises(SystemExit) as exc:
        cli_main(Opts, "collect", ["--episodes", huge], prog="tool")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--episodes" in err and "64-bit" in err, err
    msg = _error(_write(tmp_path / "c.yml", f"collect:\n  episodes: {huge}\n"))
    assert f"collect.episodes = {huge} must be an int within 64 bits" in msg, msg
    assert parse_config(Opts, "collect", ["--episodes", str(2**63 - 1)]).episodes == 2**63 - 1


def _float_fields(cls: type) -> list[str]:

    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        if float in args or any(float in typing.get_args(a) for a in args):
            out.append(f.name)
    return out


def _tools() -> list[tuple[str, Any]]:
    return [(section, tool.options_class()) for section, tool in TOOLS.items()]


def test_every_float_option_of_every_tool_refuses_nan_and_inf(tmp_path):
    checked = 0
    for section, cls in _tools():
        for name in _float_fields(cls):
            flag = "--" + name.replace("_", "-")
            is_list = "list" in str(typing.get_type_hints(cls)[name])
            for text in ("nan", "inf"):
                with pytest.raises(SystemExit):
                    parse_config(cls, section, [flag, text, "0.1"] if is_list else [flag, text])
            if is_list:  # a list of floats: the bad item is named
                path = _write(tmp_path / "c.yml", f"{section}:\n  {name}: [.nan, 0.1]\n")
                expected = rf"{section}\.{name} = \[nan, 0\.1\] .*item 0 must be a finite"
            else:
                path = _write(tmp_path / "c.yml", f"{section}:\n  {name}: .nan\n")
                expected = rf"{section}\.{name} = nan must be a finite"
            with pytest.raises(ConfigError, match=expected):
                load_yaml_section(path, section, cls)
            checked += 1
    assert checked >= 8  # lr, noise, bc_weight, free_nats, ... all of them
