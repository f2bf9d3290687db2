"""The single-host units in deploy/systemd: ``systemd-analyze verify`` accepts them without
a warning, and the service runs exactly the ``dtrtrust apply`` the README describes, on
the timer the README describes."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest
from deployhelpers import DEPLOY, ROOT, require_tool, run

UNITS = DEPLOY / "systemd"
SERVICE = UNITS / "dtrtrust-apply.service"
TIMER = UNITS / "dtrtrust-apply.timer"
INSTALLED_BINARY = "/usr/local/bin/dtrtrust"


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


@pytest.fixture(scope="module")
def systemd_analyze() -> Path:
    return require_tool("systemd-analyze", "DTRTRUST_SYSTEMD_ANALYZE", "apt-get install systemd")


def test_systemd_analyze_verifies_the_service_and_the_timer_without_a_warning(
    systemd_analyze: Path, tmp_path: Path
) -> None:
    # verify also checks that ExecStart's binary exists: point it at the one built here.
    binary = ROOT / ".venv" / "bin" / "dtrtrust"
    assert binary.exists(), "run `make .venv/.installed`"
    for unit in (SERVICE, TIMER):
        text = unit.read_text().replace(INSTALLED_BINARY, str(binary))
        (tmp_path / unit.name).write_text(text)

    done = run([systemd_analyze, "verify", tmp_path / SERVICE.name, tmp_path / TIMER.name])

    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).strip() == ""  # a bad value is only a warning


def test_a_bad_timer_value_is_caught_by_the_no_warning_rule(
    systemd_analyze: Path, tmp_path: Path
) -> None:
    (tmp_path / TIMER.name).write_text(TIMER.read_text().replace("OnBootSec=2min", "OnBootSec=2x"))

    done = run([systemd_analyze, "verify", tmp_path / TIMER.name])

    assert "Failed to parse" in done.stdout + done.stderr


def test_the_service_runs_apply_once_per_start_on_the_documented_manifest() -> None:
    service = _unit(SERVICE)["Service"]
    argv = shlex.split(service["ExecStart"])

    assert service["Type"] == "oneshot"
    assert argv == [INSTALLED_BINARY, "apply", "-f", "/etc/dtrtrust/trusts.yaml"]
    assert service["StateDirectory"] == "dtrtrust"  # /var/lib/dtrtrust
    readme = (ROOT / "README.md").read_text()
    assert "/etc/dtrtrust/trusts.yaml" in readme
    assert "systemctl enable --now dtrtrust-apply.timer" in readme


def test_the_timer_runs_the_service_hourly_and_after_boot_and_catches_up() -> None:
    timer = _unit(TIMER)

    assert timer["Timer"]["Unit"] == SERVICE.name
    assert timer["Timer"]["OnCalendar"] == "hourly"
    assert timer["Timer"]["Persistent"] == "true"
    assert "OnBootSec" in timer["Timer"]
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_installing_the_units_needs_only_these_two_files() -> None:
    assert sorted(p.name for p in UNITS.iterdir()) == [SERVICE.name, TIMER.name]
