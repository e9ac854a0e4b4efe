"""The gateway process as the city's faults need it: a wall clock that can step (`clock_jump`)
and a record of what every stored batch covered (evictions named per batch and device).

`python -m simulators.city.gwproc --config F [--offset-file P] [--stored-log L] [--drain]
[--summary]` runs the real gateway (gateway.runtime.Gateway) exactly as `edge-gateway run` does,
except that:
- with --offset-file its clock is `time.time() + offset`, and on SIGUSR1 the offset is re-read
  from P (seconds): the gateway and its drivers see the step an NTP sync makes on a Pi that
  booted without RTC;
- with --stored-log every window batch the outbox stores is also described in L, one JSON line
  `{"stream", "seq", "windows": [[device, metric, start, revision, count], ...]}`, appended
  with one write(2) before the transaction commits (so it survives a SIGKILL). A commit that
  fails is retried under the same seq: the last line of a seq is what the database holds. The
  batch itself is unchanged; once the gateway evicts it, this line is the only record of which
  readings of which device it took with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import gateway.outbox as outbox_module
from gateway.batch import BatchDocument
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.logs import configure_logging
from gateway.runtime import Gateway


class SteppedClock:
    def __init__(self, offset_file: Path) -> None:
        self.offset_file = offset_file
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def reload(self) -> None:
        try:
            self.offset = float(self.offset_file.read_text().strip() or 0)
        except (OSError, ValueError):
            pass


def record_stored_batches(path: Path) -> None:
    """Describe every window batch the outbox encodes for storage in `path` (see the module's
    docstring); the outbox module's own encoder is wrapped, the payload is not touched."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    encode = outbox_module.encode_document  # type: ignore[attr-defined]  # the name the outbox calls

    def encode_and_record(document: BatchDocument, **options: object) -> bytes:
        payload = encode(document, **options)  # type: ignore[arg-type]
        if document.windows:
            line = {"stream": document.stream, "seq": document.seq,
                    "windows": [[w.device, w.metric, w.start, w.revision, w.count] for w in document.windows]}
            os.write(fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())
        return payload

    outbox_module.encode_document = encode_and_record  # type: ignore[attr-defined]  # wrapped, same payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.city.gwproc")
    parser.add_argument("--config", required=True)
    parser.add_argument("--offset-file", default="")
    parser.add_argument("--stored-log", default="")
    parser.add_argument("--drain", action="store_true")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        for problem in error.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.format)
    if args.stored_log:
        record_stored_batches(Path(args.stored_log))
    clock = SteppedClock(Path(args.offset_file)) if args.offset_file else None
    if clock is not None:
        clock.reload()
    gateway = Gateway(config, clock=clock) if clock is not None else Gateway(config)

    async def run() -> object:
        if clock is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, clock.reload)
        return await gateway.run(None, drain=args.drain)

    summary = asyncio.run(run())
    if args.summary:
        print(summary.render())  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
