"""Log lines of the operator and the agent: ``--log-format text|json``, the same fields in
both processes, never key material (standard library only: the agent loads this too).

Every line has a UTC timestamp, the severity, the logger and the message; kopf's
per-object lines also name the object (``[name]`` in text, ``object`` in JSON, as kopf's
own JSON format does). JSON lines::

    {"timestamp": "2026-01-01T10:00:00.123Z", "severity": "info",
     "logger": "dtrtrust.agent", "message": "...", "object": {...}}

Messages never contain key material by construction; as a second line of defence, a
PEM private-key block that reaches a formatter anyway is replaced by ``[private key
redacted]`` in the message and in exception text.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any, TextIO

FORMATS = ("text", "json")
_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
REDACTED = "[private key redacted]"


def redact(text: str) -> str:
    return _PRIVATE_KEY.sub(REDACTED, text) if "PRIVATE KEY" in text else text


def _timestamp(record: logging.LogRecord) -> str:
    when = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def severity(levelno: int) -> str:
    """kopf's JSON severities, so both processes' lines parse alike."""
    if levelno <= logging.DEBUG:
        return "debug"
    if levelno <= logging.INFO:
        return "info"
    if levelno <= logging.WARNING:
        return "warn"
    if levelno <= logging.ERROR:
        return "error"
    return "fatal"


def _object(record: logging.LogRecord) -> dict[str, Any] | None:
    ref = getattr(record, "k8s_ref", None)  # set by kopf's per-object loggers
    return dict(ref) if isinstance(ref, dict) and ref else None


class TextFormatter(logging.Formatter):
    """``2026-01-01T10:00:00.123Z INFO dtrtrust.agent: [name] message``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        ref = _object(record)
        if ref is not None:
            where = "/".join(str(ref[k]) for k in ("namespace", "name") if ref.get(k))
            message = f"[{where}] {message}"
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the fields of the module docstring."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "severity": severity(record.levelno),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        ref = _object(record)
        if ref is not None:
            entry["object"] = ref
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler[TextIO]):
    """Ours, so a second setup replaces it instead of doubling every line."""


def setup(log_format: str, level: int, stream: TextIO | None = None) -> None:
    """Send every log line (kopf's included) to ``stream`` (stderr) in ``log_format``."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Handler)]
    root.addHandler(handler)
    root.setLevel(level)
    if level > logging.DEBUG:
        logging.getLogger("asyncio").setLevel(logging.WARNING)  # as kopf.configure does
