"""The plugin's commands reach the ``crowdpower`` CLI through the cli_commands hook."""

from __future__ import annotations

from click.testing import CliRunner


def test_demo_and_stripe_double_commands_are_registered(monkeypatch):
    from crowdpower.cli import cli

    monkeypatch.setenv("SECRET_KEY", "cli-test")
    runner = CliRunner()
    top = runner.invoke(cli, ["--help"])
    assert top.exit_code == 0 and "demo" in top.output and "stripe-double" in top.output
    sub = runner.invoke(cli, ["stripe-double", "--help"])
    assert sub.exit_code == 0 and "serve" in sub.output and "simulate" in sub.output
