"""wodsync's log lines (the daemon, `serve`): one format for every line, JSON with `--log-json`.

Why one formatter: an operator's log pipeline parses every line or none. A line is a message
and, where the code has them, fields (`extra={"fields": {...}}`: a host, a session, a
revision); in JSON every line carries time (UTC, ISO 8601), level, logger, message and its
fields; in text the fields follow the message as `key=value`. A traceback is one field
(`exc`), never loose lines. No field holds a secret: the callers pass identifiers and counts,
never a password, a token or a participant's e-mail.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

FIELDS = "fields"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    found = getattr(record, FIELDS, None)
    return dict(found) if isinstance(found, dict) else {}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...fields}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        for key, value in fields_of(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL message key=value …`; a value with a space is quoted as JSON."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) and ' ' in v else v}"
                         for k, v in fields_of(record).items())
        return f"{line} {extra}" if extra else line


def setup_logging(as_json: bool) -> None:
    """wodsync's log lines to stderr, in one of the two formats."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root = logging.getLogger("wodsync")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    server = logging.getLogger("uvicorn")  # the HTTP server's warnings, in the same format
    server.addHandler(handler)
    server.setLevel(logging.WARNING)
    server.propagate = False
