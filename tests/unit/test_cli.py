"""The command line's parser: global options anywhere, daemon settings as flags over the
environment over defaults, all of them in the README's one table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dtrtrust import cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "dtrtrust"


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "apply", "-f", "t.yaml"],
        ["apply", "-v", "-f", "t.yaml"],
        ["apply", "-f", "t.yaml", "--verbose"],
        ["inspect", "dtr.example.com", "-v"],
        ["agent", "-v"],
    ],
)
def test_verbose_works_before_and_after_the_subcommand(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)

    assert args.verbose is True
    assert args.debug is False


def test_debug_after_the_subcommand_and_verbose_before_both_count() -> None:
    args = cli.build_parser().parse_args(["-v", "apply", "--debug", "-f", "t.yaml"])

    assert (args.verbose, args.debug) == (True, True)


def test_daemon_settings_come_from_the_flag_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DTRTRUST_RESYNC_SECONDS", raising=False)
    default = cli.build_parser().parse_args(["operator"])
    monkeypatch.setenv("DTRTRUST_RESYNC_SECONDS", "7")
    from_env = cli.build_parser().parse_args(["operator"])
    from_flag = cli.build_parser().parse_args(["operator", "--resync-seconds", "3"])

    assert (default.resync_seconds, from_env.resync_seconds, from_flag.resync_seconds) == (
        60.0,
        7.0,
        3.0,
    )
    assert cli.setting_values(from_flag, cli.OPERATOR_SETTINGS)["DTRTRUST_RESYNC_SECONDS"] == "3.0"


def test_resolved_settings_reach_the_config_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from dtrtrust.agent.config import Config as AgentConfig
    from dtrtrust.operator.config import Config as OperatorConfig

    monkeypatch.setenv("DTRTRUST_AGENT_BACKOFF_SECONDS", "9")
    parser = cli.build_parser()
    operator = parser.parse_args(["operator", "--registry-timeout", "4", "--namespace", "ns1"])
    agent = parser.parse_args(
        ["agent", "--node-name", "n1", "--host-root", "/h", "--max-backoff-seconds", "30"]
    )

    op = OperatorConfig.from_env(cli.setting_values(operator, cli.OPERATOR_SETTINGS))
    ag_env = cli.setting_values(agent, cli.AGENT_SETTINGS)
    ag = AgentConfig.from_args(argparse.Namespace(**vars(agent)), ag_env)

    assert (op.registry_timeout, op.namespace, op.resync_seconds) == (4.0, "ns1", 60.0)
    assert (ag.node_name, str(ag.host_root), ag.backoff_seconds, ag.max_backoff_seconds) == (
        "n1",
        "/h",
        9.0,
        30.0,
    )


def test_a_bad_environment_value_is_a_usage_error_naming_the_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DTRTRUST_AGENT_RESYNC_SECONDS", "often")

    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["agent"])

    assert info.value.code == 2
    assert "--resync-seconds" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["operator", "agent"])
def test_operator_and_agent_help_describes_them_and_shows_every_default(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([command, "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)

    settings = cli.OPERATOR_SETTINGS if command == "operator" else cli.AGENT_SETTINGS
    assert "Every option can also be set by the environment variable" in text
    for setting in settings:
        assert f"env {setting.env})" in text
    assert text.count("(default: ") == len(settings)


def _environment_variables_read_by_the_package() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        names |= set(re.findall(r"\"((?:DTRTRUST_|NODE_NAME)[A-Z_]*)\"", path.read_text()))
    return names - {"DTRTRUST_DEBUG"}  # --debug itself


def test_every_environment_setting_has_a_flag_and_a_row_in_the_readme_table() -> None:
    settings = {s.env: s for s in cli.OPERATOR_SETTINGS + cli.AGENT_SETTINGS}
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `--")]

    assert _environment_variables_read_by_the_package() <= set(settings)
    for env, setting in settings.items():
        assert any(f"`{setting.flag}`" in row and f"`{env}`" in row for row in rows), env


def test_an_empty_variable_counts_so_the_startup_taint_removal_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DTRTRUST_AGENT_STARTUP_TAINT", "")

    args = cli.build_parser().parse_args(["agent"])

    assert args.startup_taint == ""
    assert cli.setting_values(args, cli.AGENT_SETTINGS)["DTRTRUST_AGENT_STARTUP_TAINT"] == ""
