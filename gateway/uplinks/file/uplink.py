"""Uplink `file`: batches as JSON Lines in the state directory, rotated by size.

The embedded default: it needs no server, so a gateway always has somewhere to put its output.
By default the file is `batches.jsonl.gz`: each batch is appended as stored in the outbox, one
gzip member holding one JSON line, so `zcat batches.jsonl.gz | jq` reads it (a gzip file may
hold many members). With `gzip = false` it is plain `batches.jsonl`, for `tail -f`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from gateway.batch import Batch
from gateway.errors import UplinkUnavailable
from gateway.uplinks.base import Uplink, UplinkContext
from gateway.uplinks.file.config import Config

__all__ = ["FileUplink"]

# Held by every append on its worker thread. The asyncio lock below keeps one uplink's sends in
# order, but a send cancelled (runner stopped, reload) releases it while its append still runs,
# and a reload's new FileUplink has a lock of its own: this one keeps any two appends and
# rotations apart, whichever instance they come from.
_APPEND_LOCK = threading.Lock()


class FileUplink(Uplink[Config]):
    type_name = "file"

    def __init__(self, config: Config, ctx: UplinkContext) -> None:
        super().__init__(config, ctx)
        directory = Path(config.directory)
        self.directory = directory if directory.is_absolute() else Path(ctx.state_dir) / directory
        self.suffix = ".jsonl.gz" if config.gzip else ".jsonl"
        self.current = self.directory / f"batches{self.suffix}"
        # The runner keeps up to max_in_flight sends under way; each append runs on a worker
        # thread, so unserialised they land out of order, and two that both decide to rotate
        # can rename onto one number (a rotated file lost). The lock is FIFO: send order.
        self._appending = asyncio.Lock()

    async def start(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UplinkUnavailable(f"cannot create {self.directory}: {error}") from error

    async def send(self, batch: Batch) -> None:
        payload = batch.payload if self.config.gzip else batch.json()
        if not self.config.gzip and not payload.endswith(b"\n"):
            payload += b"\n"  # one document per line
        async with self._appending:
            await asyncio.to_thread(self._append, payload)

    def _append(self, payload: bytes) -> None:
        with _APPEND_LOCK:
            try:
                size = self.current.stat().st_size if self.current.exists() else 0
                if size and size + len(payload) > self.config.rotate_bytes:
                    self._rotate()
                with open(self.current, "ab") as out:
                    out.write(payload)
                    if self.config.fsync:
                        out.flush()
                        os.fsync(out.fileno())
            except OSError as error:
                raise UplinkUnavailable(f"cannot write {self.current}: {error}") from error

    def _rotate(self) -> None:
        suffix = self.suffix
        numbers = sorted(
            int(number) for p in self.directory.glob(f"batches-*{suffix}")
            if (number := p.name[len("batches-") : -len(suffix)]).isdigit()
        )
        next_number = (numbers[-1] + 1) if numbers else 1
        self.current.rename(self.directory / f"batches-{next_number}{suffix}")
        numbers.append(next_number)
        for old in numbers[: max(0, len(numbers) - self.config.keep_files)]:
            (self.directory / f"batches-{old}{suffix}").unlink(missing_ok=True)
