"""The command line a new user meets: an example in every --help, --resume without a value."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from selfsup.cli import app, resume_alone


def commands(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of a (typer) click group, the group itself first."""
    found = [prefix]
    for name, cmd in group.commands.items():
        found += commands(cmd, (*prefix, name)) if hasattr(cmd, "commands") else [(*prefix, name)]
    return found


def test_every_command_help_has_an_example():
    runner = CliRunner()
    names = commands(typer.main.get_command(app))
    assert ("pretrain",) in names and ("anomaly", "score") in names
    for name in names:
        out = runner.invoke(app, [*name, "--help"], terminal_width=200).output
        assert "Example: selfsup" in out, f"selfsup {' '.join(name)} --help has no example"


def test_resume_without_a_value_means_latest():
    assert resume_alone(["pretrain", "--out", "runs/x", "--resume"])[-1] == "latest"
    assert resume_alone(["pretrain", "--resume", "--out", "runs/x"])[:3] == ["pretrain", "--resume", "latest"]
    assert resume_alone(["pretrain", "--resume", "train.lr=1e-3"])[:3] == ["pretrain", "--resume", "latest"]
    assert resume_alone(["pretrain", "--resume", "runs/y"]) == ["pretrain", "--resume", "runs/y"]
