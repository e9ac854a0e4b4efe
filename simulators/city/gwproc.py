"""The gateway process with a wall clock that can step, for the `clock_jump` fault.

`python -m simulators.city.gwproc --config F --offset-file P [--drain] [--summary]` runs the real
gateway (gateway.runtime.Gateway, injected clock) exactly as `edge-gateway run` does, except
that its clock is `time.time() + offset`, and on SIGUSR1 the offset is re-read from P (seconds).
The gateway and its drivers then see the step an NTP sync makes on a Pi that booted without RTC.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.city.gwproc")
    parser.add_argument("--config", required=True)
    parser.add_argument("--offset-file", required=True)
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
    clock = SteppedClock(Path(args.offset_file))
    clock.reload()
    gateway = Gateway(config, clock=clock)

    async def run() -> object:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, clock.reload)
        return await gateway.run(None, drain=args.drain)

    summary = asyncio.run(run())
    if args.summary:
        print(summary.render())  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
