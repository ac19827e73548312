"""Tests for rlkit.config: flags from dataclasses, config.yml sections, precedence, saving."""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from rlkit.config import (
    ConfigError,
    build_parser,
    cli_main,
    config_to_dict,
    load_yaml_section,
    parse_config,
    save_run_config,
)
from rlkit.config.fields import check_fields, opt
from rlkit.tools import TOOLS


@dataclass
class ToolConfig:
    episodes: int = field(default=100, metadata={"help": "number of demonstration episodes"})
    workers: int | None = field(default=None, metadata={"help": "worker processes"})
    output: str = field(default="data/demos", metadata={"help": "output dataset folder"})
    noise: float = 0.0
    batch_size: int = field(default=32, metadata={"help": "minibatch size"})
    parallel_loading: bool = field(default=True, metadata={"help": "load episodes in parallel"})
    overwrite: bool = False
    sources: list[str] = field(default_factory=list, metadata={"help": "input folders"})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"nargs": "*"})
    algo: Literal["sac", "ppo", "td3"] = field(default="sac", metadata={"help": "RL algorithm"})
    root: Path = field(default=Path("runs"), metadata={"help": "root folder, 100% local"})
    loading_workers: int = field(default=4, metadata={"aliases": ["world_loading_workers"]})
    data_dir: str = field(default="", metadata={"positional": True, "help": "input data folder"})

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")


@dataclass
class RequiredConfig:
    data_dir: str = field(metadata={"positional": True, "help": "input"})
    epochs: int = 1


def parse(argv: list[str], section: str = "world_model") -> ToolConfig:
    return parse_config(ToolConfig, section, argv)


def write_yml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never pick up a real ./config.yml from wherever pytest runs.
    monkeypatch.chdir(tmp_path)


# -- flags ------------------------------------------------------------------------------------


def test_defaults_without_flags() -> None:
    assert parse([]) == ToolConfig()


@pytest.mark.parametrize("flag", ["--batch-size", "--batch_size"])
def test_int_flag_both_spellings(flag: str) -> None:
    assert parse([flag, "7"]).batch_size == 7


@pytest.mark.parametrize(
    ("argv", "attr", "expected"),
    [
        (["--noise", "0.5"], "noise", 0.5),
        (["--output", "x/y"], "output", "x/y"),
        (["--workers", "3"], "workers", 3),
        (["--workers", "none"], "workers", None),
        (["--root", "a/b"], "root", Path("a/b")),
        (["--algo", "ppo"], "algo", "ppo"),
        (["--sources", "a", "b"], "sources", ["a", "b"]),
        (["--seeds", "1", "2"], "seeds", [1, 2]),
        (["--seeds"], "seeds", []),
        (["--loading-workers", "8"], "loading_workers", 8),
        (["--loading_workers", "8"], "loading_workers", 8),
        (["--world-loading-workers", "8"], "loading_workers", 8),
        (["--world_loading_workers", "8"], "loading_workers", 8),
    ],
)
def test_flag_kinds(argv: list[str], attr: str, expected: object) -> None:
    assert getattr(parse(argv), attr) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], True),
        (["--parallel-loading"], True),
        (["--parallel_loading"], True),
        (["--no-parallel-loading"], False),
        (["--no_parallel_loading"], False),
        (["--no_parallel_loading", "--parallel-loading"], True),
    ],
)
def test_bool_flag_spellings(argv: list[str], expected: bool) -> None:
    assert parse(argv).parallel_loading is expected


def test_bool_field_named_no_x() -> None:
    @dataclass
    class NoX:
        no_parallel_loading: bool = False

    for flag in ("--no-parallel-loading", "--no_parallel_loading"):
        assert parse_config(NoX, "rl", [flag]).no_parallel_loading is True
    assert parse_config(NoX, "rl", ["--no-no-parallel-loading"]).no_parallel_loading is False


def test_positional() -> None:
    cfg = parse(["some/data", "--episodes", "5"])
    assert (cfg.data_dir, cfg.episodes) == ("some/data", 5)


@pytest.mark.parametrize(
    "argv",
    [["--episodes", "ten"], ["--algo", "dqn"], ["--no-such-flag"], ["--overwrite=yes"], ["a", "b"]],
)
def test_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(ToolConfig, "collect", argv, prog="tool")
    assert exc.value.code == 2
    assert "tool: error:" in capsys.readouterr().err


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_config(ToolConfig, "collect", ["--help"], prog="tool", description="Collect demos.")
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo line wrapping
    for text in [
        "Collect demos.",
        "--episodes", "number of demonstration episodes", "(default: 100)",
        "--batch-size, --batch_size", "minibatch size",
        "--no-parallel-loading", "--no_parallel_loading", "load episodes in parallel",
        "--world-loading-workers", "--world_loading_workers", "(default: 4)",
        "--noise", "(default: 0.0)",
        "{sac,ppo,td3}", "RL algorithm",
        "100% local", "(default: 'runs')",
        "data_dir", "input data folder",
        "--config PATH",
    ]:  # fmt: skip
        assert text in out, text
    parser = build_parser(ToolConfig)
    assert all(a.help for a in parser._actions)


# -- precedence -------------------------------------------------------------------------------


def test_precedence_cli_over_yml_over_default(tmp_path: Path) -> None:
    cfg_file = write_yml(
        tmp_path / "my.yml",
        {"collect": {"episodes": 10, "batch-size": 64, "sources": ["a"], "root": "r"}},
    )
    cfg = parse_config(
        ToolConfig, "collect", ["--config", str(cfg_file), "--episodes", "20", "--noise", "0.1"]
    )
    assert cfg.episodes == 20  # yml and CLI: CLI wins
    assert cfg.batch_size == 64  # yml only
    assert cfg.noise == 0.1  # CLI only
    assert cfg.output == "data/demos"  # default
    assert cfg.sources == ["a"]
    assert cfg.root == Path("r")


def test_default_config_yml_in_cwd(tmp_path: Path) -> None:
    write_yml(tmp_path / "config.yml", {"collect": {"episodes": 11}, "bc": {"whatever": 1}})
    assert parse_config(ToolConfig, "collect", []).episodes == 11


def test_missing_explicit_config_file() -> None:
    with pytest.raises(ConfigError, match="nope.yml"):
        parse_config(ToolConfig, "collect", ["--config", "nope.yml"])


def test_missing_section_is_empty(tmp_path: Path) -> None:
    write_yml(tmp_path / "config.yml", {"bc": {"epochs": 3}})
    assert parse_config(ToolConfig, "collect", []) == ToolConfig()


def test_yml_aliases_and_flat_key(tmp_path: Path) -> None:
    path = write_yml(tmp_path / "c.yml", {"world_model": {"world-loading-workers": 6}})
    assert load_yaml_section(path, "world_model", ToolConfig) == {"loading_workers": 6}
    # Seed's flat spelling applies ...
    write_yml(path, {"world_loading_workers": 8, "world_model": {"episodes": 2}})
    assert load_yaml_section(path, "world_model", ToolConfig) == {
        "loading_workers": 8,
        "episodes": 2,
    }
    # ... both spellings may be set only to the same value, and the CLI wins over both.
    write_yml(path, {"world_loading_workers": 8, "world_model": {"loading_workers": 8}})
    assert parse(["--config", str(path)]).loading_workers == 8
    assert parse(["--config", str(path), "--loading-workers", "1"]).loading_workers == 1
    write_yml(path, {"world_loading_workers": 8, "world_model": {"loading_workers": 5}})
    with pytest.raises(ConfigError, match="set the same option to different values"):
        parse(["--config", str(path)])


def test_flat_key_of_other_tool_is_ignored(tmp_path: Path) -> None:
    @dataclass
    class Bc:
        epochs: int = 1

    path = write_yml(tmp_path / "c.yml", {"world_loading_workers": 8, "bc": {"epochs": 3}})
    assert load_yaml_section(path, "bc", Bc) == {"epochs": 3}


def test_positional_from_yml(tmp_path: Path) -> None:
    write_yml(tmp_path / "config.yml", {"merge": {"data_dir": "from/yml"}})
    assert parse_config(RequiredConfig, "merge", []).data_dir == "from/yml"
    assert parse_config(RequiredConfig, "merge", ["cli"]).data_dir == "cli"


def test_required_missing() -> None:
    with pytest.raises(ConfigError, match="data_dir is required"):
        parse_config(RequiredConfig, "merge", [])


# -- config.yml errors ------------------------------------------------------------------------


def test_unknown_key_message(tmp_path: Path) -> None:
    path = write_yml(tmp_path / "c.yml", {"collect": {"episode": 3}})
    with pytest.raises(ConfigError) as exc:
        load_yaml_section(path, "collect", ToolConfig)
    msg = str(exc.value)
    for part in [str(path), "'collect'", "'episode'", "did you mean 'episodes'?"]:
        assert part in msg, msg


def test_unknown_section_message(tmp_path: Path) -> None:
    path = write_yml(tmp_path / "c.yml", {"colect": {"episodes": 3}})
    with pytest.raises(ConfigError) as exc:
        load_yaml_section(path, "collect", ToolConfig)
    msg = str(exc.value)
    assert str(path) in msg and "'colect'" in msg and "did you mean 'collect'?" in msg


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"episodes": "ten"}, "collect.episodes = 'ten' must be int"),
        ({"episodes": True}, "collect.episodes = True must be int"),
        ({"episodes": None}, "collect.episodes = None must be int"),
        ({"noise": "x"}, "must be float"),
        ({"sources": "a"}, "collect.sources = 'a' must be a list of str"),
        ({"seeds": [1, "2"]}, "must be a list of int"),
        ({"algo": "dqn"}, "must be one of 'sac', 'ppo', 'td3'"),
        ({"overwrite": 1}, "must be bool"),
        ({"workers": "many"}, "must be int or null"),
    ],
)
def test_wrong_type_message(tmp_path: Path, value: dict[str, object], expected: str) -> None:
    path = write_yml(tmp_path / "config.yml", {"collect": value})
    with pytest.raises(ConfigError, match="config.yml") as exc:
        load_yaml_section(path, "collect", ToolConfig)
    assert expected in str(exc.value)


def test_coercions(tmp_path: Path) -> None:
    path = write_yml(
        tmp_path / "c.yml", {"collect": {"noise": 1, "workers": None, "root": "x", "algo": "td3"}}
    )
    values = load_yaml_section(path, "collect", ToolConfig)
    assert values == {"noise": 1.0, "workers": None, "root": Path("x"), "algo": "td3"}
    assert isinstance(values["noise"], float)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("collect: [1, 2\n", "invalid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("collect: 3\n", "section 'collect' must be a mapping"),
        ("collect:\n  episodes: 1\n  episodes_: 2\n", "unknown key"),
        ("collect:\n  batch-size: 1\n  batch_size: 2\n", "set twice"),
    ],
)
def test_bad_yaml_files(tmp_path: Path, text: str, match: str) -> None:
    path = write_yml(tmp_path / "bad.yml", text)
    with pytest.raises(ConfigError, match=match) as exc:
        load_yaml_section(path, "collect", ToolConfig)
    assert str(path) in str(exc.value)


def test_empty_file_and_empty_section(tmp_path: Path) -> None:
    path = write_yml(tmp_path / "c.yml", "")
    assert load_yaml_section(path, "collect", ToolConfig) == {}
    write_yml(path, "collect:\n")
    assert load_yaml_section(path, "collect", ToolConfig) == {}


def test_cli_main_yml_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_yml(tmp_path / "config.yml", {"collect": {"episods": 3}})
    with pytest.raises(SystemExit) as exc:
        cli_main(ToolConfig, "collect", [], prog="collect_demonstrations.py")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("collect_demonstrations.py: error: config.yml: unknown key 'episods'")


def test_post_init_error_becomes_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="episodes must be >= 1, got 0"):
        parse(["--episodes", "0"])
    with pytest.raises(SystemExit) as exc:
        cli_main(ToolConfig, "collect", ["--episodes", "0"], prog="tool")
    assert exc.value.code == 2
    assert "tool: error: --episodes: episodes must be >= 1, got 0" in capsys.readouterr().err


# -- saving -----------------------------------------------------------------------------------


def test_save_run_config_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["collect_demonstrations.py"])
    argv = ["d ir", "--episodes", "10", "--sources", "a", "b", "--root", "r"]
    cfg = parse_config(ToolConfig, "collect", argv)
    out = tmp_path / "run" / "1"
    save_run_config(cfg, out, section="collect", argv=argv)

    assert sorted(p.name for p in out.iterdir()) == ["command.txt", "config.resolved.yml"]
    command = (out / "command.txt").read_text()
    assert command == (
        "python collect_demonstrations.py 'd ir' --episodes 10 --sources a b --root r\n"
    )
    saved = yaml.safe_load((out / "config.resolved.yml").read_text())
    assert saved == {"collect": config_to_dict(cfg)}
    assert saved["collect"]["root"] == "r"
    loaded = ToolConfig(**load_yaml_section(out / "config.resolved.yml", "collect", ToolConfig))
    assert loaded == cfg
    # The resolved file also works as --config.
    again = parse_config(ToolConfig, "collect", ["--config", str(out / "config.resolved.yml")])
    assert again == cfg


def test_build_parser_rejects_unsupported_types() -> None:
    @dataclass
    class Bad:
        x: dict[str, int] = field(default_factory=dict)

    with pytest.raises(TypeError, match="unsupported"):
        build_parser(Bad)


# -- opt() bounds, checked by check_fields -----------------------------------------------------


@dataclass
class Bounded:
    epochs: int = opt(50, "training epochs", bounds="[1, 1e6]")
    lr: float = opt(1e-3, "learning rate", bounds="(0, 1]")
    seed: int = opt(0, "seed", bounds="[0, 2^32)")
    widths: list[int] = opt([256, 256], "hidden widths", bounds="[1, 16384]")
    threads: int | None = opt(None, "threads (default: cores)", bounds="[1, 1024]", why="a cap")

    def __post_init__(self) -> None:
        check_fields(self)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs must be in [1, 1e6], got 0"),
        ({"epochs": 1_000_001}, "epochs must be in [1, 1e6], got 1000001"),
        ({"lr": 0.0}, "lr must be in (0, 1], got 0.0"),  # an open end excludes its bound
        ({"lr": float("nan")}, "lr must be in (0, 1], got nan"),
        ({"seed": 2**32}, f"seed must be in [0, 2^32), got {2**32}"),
        ({"widths": [64, 0]}, "widths must be in [1, 16384], got [64, 0]"),  # every item
        ({"threads": 0}, "threads must be in [1, 1024] (a cap), got 0"),
    ],
)
def test_check_fields_names_the_option_its_bounds_and_the_value(options, message):
    with pytest.raises(ValueError) as e:
        Bounded(**options)
    assert str(e.value) == message


def test_bounds_accept_their_closed_ends_none_and_give_each_instance_its_own_list():
    a = Bounded(epochs=1, lr=1.0, seed=2**32 - 1, threads=None)
    a.widths.append(8)
    assert Bounded().widths == [256, 256]


def test_a_malformed_interval_fails_where_it_is_written():
    with pytest.raises(ValueError, match="bounds '1..10' is not an interval"):
        opt(1, "x", bounds="1..10")


@pytest.mark.parametrize("section", sorted(TOOLS))
def test_every_numeric_option_of_every_tool_has_bounds(section):
    """A typo (--episodes 1e20) must be one clear error, not an allocation the kernel kills."""
    cls = TOOLS[section].options_class()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        numeric = {int, float} & {
            tp,
            *typing.get_args(tp),
            *(a for arg in typing.get_args(tp) for a in typing.get_args(arg)),
        }
        if numeric:
            assert "bounds" in f.metadata, f"{cls.__name__}.{f.name} has no bounds"


def test_help_shows_the_bounds():
    text = " ".join(build_parser(Bounded).format_help().split())
    assert "training epochs (default: 50; range [1, 1e6])" in text
    assert "threads (default: cores) (range [1, 1024])" in text  # the help's own default
