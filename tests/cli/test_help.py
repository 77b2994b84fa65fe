"""Every command is documented with an example, and help never needs a store."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from tsmeter.cli.main import cli


def walk(command: click.Command, path: str = "tsmeter") -> Iterator[tuple[str, click.Command]]:
    """Every command and group under ``command``, with its command line."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, f"{path} {name}")


COMMANDS = [path for path, _ in walk(cli)]


def test_every_command_and_group_has_an_example() -> None:
    """Each command's help text contains an example, so an undocumented command fails here."""
    undocumented = [path for path, cmd in walk(cli) if "Example" not in (cmd.help or "")]
    assert undocumented == []


def test_the_command_tree_has_every_issue_command() -> None:
    """The tree holds the groups and commands the CLI promises."""
    assert set(COMMANDS) >= {
        "tsmeter",
        "tsmeter aggregate",
        "tsmeter alert list",
        "tsmeter alert evaluate",
        "tsmeter demo",
        "tsmeter jobs run",
        "tsmeter scheduler run",
        "tsmeter notifications list",
        "tsmeter posthog status",
        "tsmeter posthog backfill",
        "tsmeter reconcile",
        "tsmeter outbox status",
        "tsmeter outbox retry",
        "tsmeter metric define",
        "tsmeter metric update",
        "tsmeter metric delete",
        "tsmeter metric get",
        "tsmeter metric list",
        "tsmeter usage record",
        "tsmeter usage import",
        "tsmeter usage get",
        "tsmeter usage summary",
        "tsmeter usage export",
        "tsmeter threshold create",
        "tsmeter threshold update",
        "tsmeter threshold delete",
        "tsmeter threshold list",
    }


@pytest.mark.parametrize("path", COMMANDS)
def test_help_renders_the_example(path: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """``--help`` of every command exits 0, shows an example and creates no store."""
    home = tmp_path_factory.mktemp("home")
    env = {"XDG_DATA_HOME": str(home), "TSMETER_STORE_URL": ""}
    result = CliRunner().invoke(cli, [*path.split()[1:], "--help"], env=env)
    assert result.exit_code == 0, result.output
    assert "Example:" in result.stdout
    assert list(home.iterdir()) == []


def test_every_module_and_public_function_is_documented() -> None:
    """The CLI modules and the functions they export carry docstrings."""
    import importlib
    import inspect

    names = [
        "main",
        "context",
        "output",
        "params",
        "metric",
        "usage",
        "importer",
        "threshold",
        "aggregate",
        "demo",
        "demo_data",
        "alert",
        "jobs",
        "notifications",
        "posthog",
        "reconcile",
        "outbox",
    ]
    for name in names:
        module = importlib.import_module(f"tsmeter.cli.{name}")
        assert module.__doc__, name
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert obj.__doc__, f"{name}.{public}"


def test_no_arguments_prints_help() -> None:
    """``tsmeter`` alone lists the commands instead of failing with a traceback."""
    result = CliRunner().invoke(cli, [])
    assert "Commands:" in result.output
    assert "Traceback" not in result.output


def test_version() -> None:
    """``--version`` prints the package version."""
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "0.1.0" in result.stdout


def test_no_parameter_takes_numbers_through_float() -> None:
    """Numbers go through NUMBER, which refuses what float() would reinterpret (1_000, ١٢)."""
    loose = [
        f"{path} {param.name}"
        for path, command in walk(cli)
        for param in command.params
        if type(param.type) is click.types.FloatParamType
    ]
    assert loose == []
