"""structlog set-up: readable key=value on a terminal, one JSON object per line otherwise.

Everything goes through the same renderer: the gateway's own structlog calls and the standard
library loggers of paho, websockets, pymodbus and asyncio, so a log shipper never meets a plain
text line inside the JSON stream. When stderr is the journal (systemd sets JOURNAL_STREAM to its
device and inode) each line starts with the sd-daemon priority prefix `<N>`, so
`journalctl -p warning` filters by level.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal, TextIO

import structlog

__all__ = ["LOG_ONCE_MAX", "configure_logging", "stream_is_journal"]

# A set of causes already logged ("log once per cause") holds at most this many: a cause whose
# text varies (a server's error body, a range of sequence numbers) must not grow it for ever.
# Past it, new causes are only counted.
LOG_ONCE_MAX = 100

# sd-daemon(3) priorities (syslog levels)
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2}


def stream_is_journal(stream: Any) -> bool:
    """True when `stream` is the journal's socket that systemd named in JOURNAL_STREAM."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class _Prefixed:
    """Wraps a renderer: `<N>` in front of each line for journald."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> str:
        level = str(event_dict.get("level", method_name))
        return f"<{PRIORITY.get(level, 6)}>{self.renderer(logger, method_name, event_dict)}"


class _LibraryBridge(logging.Handler):
    """Standard library records (paho, websockets, pymodbus, asyncio) into structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            structlog.get_logger(record.name).log(record.levelno, record.getMessage(), **fields)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
    *,
    journal: bool | None = None,
) -> None:
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and getattr(out, "isatty", lambda: False)())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if console else structlog.processors.JSONRenderer()
    )
    if journal if journal is not None else stream_is_journal(out):
        renderer = _Prefixed(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library: warning and above, through the same renderer.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_LibraryBridge())
    root.setLevel(logging.WARNING)
    # pymodbus logs every unanswered request at ERROR with a frame dump: on a noisy RS-485 bus
    # that is a line per poll. The serial driver counts and logs those once per cause instead.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
