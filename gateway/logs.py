"""Structured JSON logs, one object per line, with the design's fields.

    log_event(logger, "session_created", user_id=..., session_id=..., duration_ms=...)

writes {"timestamp", "level", "component", "action", ...fields}. The component is the
logger's name below "gateway." (so `logging.getLogger("gateway.session-manager")` logs as
component "session-manager").
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

_FIELDS = "fields"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "component": record.name.removeprefix("gateway."),
        }
        fields = getattr(record, _FIELDS, None)
        if fields:
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_event(logger: logging.Logger, action: str, level: int = logging.INFO, exc_info: bool = False,
              **fields: Any) -> None:
    """Log one action with its fields; fields that are None are left out."""
    if logger.isEnabledFor(level):
        data = {"action": action, **{k: v for k, v in fields.items() if v is not None}}
        logger.log(level, action, exc_info=exc_info, extra={_FIELDS: data})


def setup_logging(level: str) -> None:
    """Send the gateway's logs (and aiohttp's) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would duplicate the http component's request lines.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
