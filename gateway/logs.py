"""structlog set-up: readable key=value on a terminal, JSON lines otherwise (journald, files)."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

__all__ = ["configure_logging"]


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto", stream: object = None
) -> None:
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and getattr(out, "isatty", lambda: False)())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if console
        else structlog.processors.JSONRenderer()
    )
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
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (paho, websockets, pymodbus) go to the
    # same stream at warning and above, so their complaints are not lost.
    logging.basicConfig(level=logging.WARNING, stream=out, format="%(levelname)s %(name)s: %(message)s")  # type: ignore[arg-type]
    # pymodbus logs every unanswered request at ERROR with a frame dump: on a noisy RS-485 bus
    # that is a line per poll. The serial driver counts and logs those once per cause instead.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
