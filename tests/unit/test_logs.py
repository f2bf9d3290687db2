"""``--log-format text|json``: the formatters, and the operator and the agent as real
processes (against an API server that is not there, so they log their retries) writing
lines with the same fields."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfactory import make_ca, make_leaf
from dtrtrust.cli import logs

FIELDS = {"timestamp", "severity", "logger", "message"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KEY_PEM = make_leaf("logs client", make_ca("logs CA"), eku=["clientAuth"]).key_pem.decode()


def _record(
    message: str, *args: object, level: int = logging.INFO, **extra: object
) -> logging.LogRecord:
    record = logging.LogRecord("dtrtrust.agent", level, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_have_timestamp_severity_logger_message() -> None:
    entry = json.loads(
        logs.JsonFormatter().format(_record("wrote %d files", 3, level=logging.WARNING))
    )

    assert set(entry) == FIELDS
    assert TIMESTAMP.match(entry["timestamp"])
    assert (entry["severity"], entry["logger"], entry["message"]) == (
        "warn",
        "dtrtrust.agent",
        "wrote 3 files",
    )


def test_kopf_object_lines_name_the_object_in_both_formats() -> None:
    ref = {"apiVersion": "dtrtrust.io/v1alpha1", "kind": "DTRTrust", "name": "dtr-prod"}
    record = _record("Handler succeeded.", k8s_ref=ref)

    entry = json.loads(logs.JsonFormatter().format(record))
    text = logs.TextFormatter().format(record)

    assert entry["object"] == ref
    assert text.endswith("INFO dtrtrust.agent: [dtr-prod] Handler succeeded.")


def test_text_lines_start_with_a_utc_timestamp() -> None:
    line = logs.TextFormatter().format(_record("listed 2 bundle Secret(s)"))

    stamp, level, rest = line.split(" ", 2)
    assert TIMESTAMP.match(stamp)
    assert (level, rest) == ("INFO", "dtrtrust.agent: listed 2 bundle Secret(s)")


@pytest.mark.parametrize("formatter", [logs.TextFormatter(), logs.JsonFormatter()])
def test_a_private_key_never_reaches_a_log_line(formatter: logging.Formatter) -> None:
    body = KEY_PEM.splitlines()[1]
    try:
        raise ValueError(f"bad data {KEY_PEM}")
    except ValueError:
        record = _record("got %s and then", KEY_PEM[:-30], exc_info=sys.exc_info())
        record.exc_info = sys.exc_info()

    line = formatter.format(record)

    assert body not in line
    assert "PRIVATE KEY" not in line.replace(logs.REDACTED, "")
    assert logs.REDACTED in line


def test_setup_twice_keeps_one_handler() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        logs.setup("json", logging.INFO, stream)
        logs.setup("json", logging.INFO, stream)
        logging.getLogger("dtrtrust.test").info("once")
    finally:
        root.handlers[:] = before
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["once"]


# --- the real processes ----------------------------------------------------------------


@pytest.fixture
def no_api(tmp_path: Path) -> Path:
    """A kubeconfig whose API server is a closed port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": f"https://127.0.0.1:{port}",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def _lines_of(argv: list[str], kubeconfig: Path, log: Path, wanted: int) -> Iterator[str]:
    env = os.environ | {"KUBECONFIG": str(kubeconfig), "DTRTRUST_LOG_FORMAT": "text"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dtrtrust.cli", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60  # a bound, not a speed assertion
        while time.monotonic() < deadline and proc.poll() is None:
            if len(log.read_text(errors="replace").splitlines()) >= wanted:
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    lines = log.read_text(errors="replace").splitlines()
    assert len(lines) >= wanted, "\n".join(lines)
    return iter(lines)


def _json_entries(lines: Iterator[str]) -> list[dict[str, object]]:
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object (tracebacks included)
        assert set(entry) >= FIELDS, line
        assert TIMESTAMP.match(str(entry["timestamp"])), line
        entries.append(entry)
    return entries


def test_operator_and_agent_log_json_with_the_same_fields_when_the_flag_says_so(
    no_api: Path, tmp_path: Path
) -> None:
    host_root = tmp_path / "host"
    host_root.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    operator = _json_entries(
        _lines_of(
            ["operator", "--log-format", "json", "--metrics-port", str(port)],
            no_api,
            tmp_path / "operator.log",
            wanted=2,
        )
    )
    agent = _json_entries(
        _lines_of(
            ["agent", "--log-format", "json", "--node-name", "n1", "--host-root", str(host_root)],
            no_api,
            tmp_path / "agent.log",
            wanted=2,
        )
    )

    assert {str(e["logger"]).split(".")[0] for e in operator} >= {"kopf"}
    assert any(str(e["logger"]) == "dtrtrust.agent" for e in agent)
    assert {k for e in operator for k in e} - {"object", "exception"} == FIELDS
    assert {k for e in agent for k in e} - {"object", "exception"} == FIELDS


def test_agent_text_lines_have_timestamps(no_api: Path, tmp_path: Path) -> None:
    host_root = tmp_path / "host"
    host_root.mkdir()

    lines = list(
        _lines_of(
            ["agent", "--node-name", "n1", "--host-root", str(host_root)],
            no_api,
            tmp_path / "agent.log",
            wanted=2,
        )
    )

    starts = [line for line in lines if not line.startswith((" ", "Traceback"))]
    assert starts
    assert all(TIMESTAMP.match(line.split(" ", 1)[0]) for line in starts), lines
