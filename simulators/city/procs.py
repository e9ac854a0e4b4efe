"""The charge-point fleet in worker processes: one event loop cannot drive tens of thousands of
OCPP clients on their timetables (scale 30 of the reference city fell behind in one process).

`ChargePointProcs` is a DeviceGroup like ChargePointFleet, and the runner and the faults use it
the same way. It starts `parts` workers (`python -m simulators.city.procs`), each running one
share of the fleet (simulators.city.ocpp_fleet: every charge point whose index in its group is
the worker's number modulo `parts`), and talks to them over their stdin/stdout, one JSON object
per line:

    parent -> worker   {"do": "boot"} | {"do": "run", "t0": wall time} | {"do": "drop", "idents": [...]}
                       | {"do": "stop"} | {"do": "close"}
    worker -> parent   {"books": ...} after every command and once a second: the readings each of
                       its devices sent since the last books (what each charge point encoded, its
                       own record), its totals (booted, steps, step readings, reconnects, drops,
                       errors) and how far behind its timetable it ran.

The report stays exact: after `stop` and after `close` a worker answers with books that hold
everything its charge points sent. A worker that dies is a simulator error of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections import Counter
from typing import Any

import msgspec

from simulators.city.fleet import DeviceGroup
from simulators.city.ocpp_fleet import ChargePointFleet, first_idents, steps_per_second
from simulators.city.scenario import ChargePointGroup

__all__ = ["CHARGE_POINTS_PER_PROC", "ChargePointProcs", "auto_procs", "charge_point_fleet"]

# Charge points per worker: the runner's own process kept 9,360 on their timetable beside every
# other fleet (scale 20) and fell behind at 14,040; a worker of 4,000 leaves room on a loaded box.
CHARGE_POINTS_PER_PROC = 4000
BOOKS_EVERY = 1.0  # s between a worker's books while it runs
REPLY_TIMEOUT = 900.0  # s a worker may take to boot its share or stop (boot storms at scale 35)


def auto_procs(charge_points: int) -> int:
    """Workers for this many charge points: one process up to CHARGE_POINTS_PER_PROC."""
    return max(1, math.ceil(charge_points / CHARGE_POINTS_PER_PROC))


def charge_point_fleet(groups: list[ChargePointGroup], *, seed: int, procs: int) -> ChargePointFleet | ChargePointProcs:
    """The city's charge points in this process (procs <= 1) or in `procs` workers."""
    if procs <= 1:
        return ChargePointFleet(groups, seed=seed)
    return ChargePointProcs(groups, seed=seed, parts=procs)


class _Worker:
    """The parent's handle on one worker: its process, the books it sent, its pending answer."""

    def __init__(self, part: int, process: asyncio.subprocess.Process) -> None:
        self.part = part
        self.process = process
        self.totals: dict[str, Any] = {}
        self.answered = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(msgspec.json.encode(message) + b"\n")


class ChargePointProcs(DeviceGroup):
    """The charge points of the city in `parts` worker processes, with ChargePointFleet's surface."""

    protocol = "ocpp"

    def __init__(self, groups: list[ChargePointGroup], *, seed: int, parts: int, python: str = sys.executable) -> None:
        super().__init__()
        self.groups = groups
        self.seed = seed
        self.parts = parts
        self.python = python
        self.workers: list[_Worker] = []
        self._sent: Counter[str] = Counter()
        self._own_errors: Counter[str] = Counter()  # a worker that died or did not answer
        self._closing = False

    # ------------------------------------------------------------------ ChargePointFleet's surface

    def owns(self, device: str) -> bool:
        return device.startswith("ocpp:")

    def driver_configs(self, port: int) -> list[dict[str, Any]]:  # type: ignore[override]
        return ChargePointFleet(self.groups, seed=self.seed).driver_configs(port)

    def _total(self, key: str) -> int:
        return sum(int(w.totals.get(key, 0)) for w in self.workers)

    @property
    def booted(self) -> int:
        return self._total("booted")

    @property
    def drops(self) -> int:
        return self._total("drops")

    @property
    def reconnects(self) -> int:
        return self._total("reconnects")

    @property
    def charge_points(self) -> int:
        return self._total("charge_points")

    @property
    def errors(self) -> Counter[str]:
        """Failed boots and steps in every worker, and workers that died."""
        out = Counter(self._own_errors)
        for worker in self.workers:
            out.update(worker.totals.get("errors", {}))
        return out

    def sent(self) -> Counter[str]:
        return Counter(self._sent)

    def nominal_rate(self) -> float:
        steps = self._total("steps")
        return steps_per_second(self.groups) * self._total("step_readings") / steps if steps else 0.0

    def proc_facts(self) -> dict[str, Any]:
        """For the report: the workers and the CPU each used (its share of the two cores)."""
        return {"processes": self.parts, "worker_cpu_seconds": [w.totals.get("cpu_seconds") for w in self.workers]}

    def disconnect(self, count: int) -> None:
        """The first `count` charge points of the city drop after their current step: each worker
        is told the ones of its share."""
        idents = first_idents(self.groups, count)
        for worker in self.workers:
            worker.send({"do": "drop", "idents": idents})

    # ------------------------------------------------------------------ the workers

    async def start(self, port: int) -> None:
        config = msgspec.json.encode({"groups": msgspec.to_builtins(self.groups), "seed": self.seed, "port": port,
                                      "parts": self.parts}).decode()
        for part in range(self.parts):
            process = await asyncio.create_subprocess_exec(
                self.python, "-m", "simulators.city.procs", config, str(part),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26)
            worker = _Worker(part, process)
            worker.reader = asyncio.create_task(self._read(worker))
            self.workers.append(worker)
        await self._command({"do": "boot"})
        await self._command({"do": "run", "t0": time.time() + 0.5})  # one timetable for every worker

    async def _read(self, worker: _Worker) -> None:
        stdout = worker.process.stdout
        assert stdout is not None
        while line := await stdout.readline():
            books = msgspec.json.decode(line)
            self._sent.update(books.pop("sent"))
            self.pace.note(books.get("lag", 0.0))
            answered = books.pop("answer", False)
            worker.totals = books
            if answered:
                worker.answered.set()
        code = await worker.process.wait()
        if not self._closing:
            self._own_errors[f"worker {worker.part} exited ({code})"] += 1
        worker.answered.set()  # nobody waits forever on a dead worker

    async def _command(self, message: dict[str, Any]) -> None:
        """Send to every worker and wait for each one's answer (its books after the command)."""
        live = [w for w in self.workers if w.process.returncode is None]
        for worker in live:
            worker.answered.clear()
            worker.send(message)
        for worker in live:
            assert worker.process.stdin is not None
            with contextlib.suppress(ConnectionError):
                await worker.process.stdin.drain()
        try:
            await asyncio.wait_for(asyncio.gather(*(w.answered.wait() for w in live)), REPLY_TIMEOUT)
        except TimeoutError:
            self._own_errors[f"workers did not answer {message['do']!r} within {REPLY_TIMEOUT:g} s"] += 1

    async def stop_sending(self) -> None:
        if self.workers and not self.stopping.is_set():
            self.stopping.set()
            await self._command({"do": "stop"})

    async def close(self) -> None:
        await self.stop_sending()
        if self._closing:
            return
        self._closing = True
        await self._command({"do": "close"})
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.process.wait(), 30.0)
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
            if worker.reader is not None:
                await worker.reader


# ---------------------------------------------------------------------- the worker's side


class _Books:
    """What a worker's charge points sent since the last books, read off each one's own record
    (SimChargePoint.expected, appended as each message is encoded)."""

    def __init__(self, fleet: ChargePointFleet) -> None:
        self.fleet = fleet
        self.seen: dict[str, int] = {}

    def message(self, *, answer: bool = False) -> bytes:
        fleet = self.fleet
        sent: Counter[str] = Counter()
        for cp in fleet.charge_point_list:
            expected = cp.expected
            seen = self.seen.get(cp.ident, 0)
            for item in expected[seen:]:
                sent[item.device] += 1
            self.seen[cp.ident] = len(expected)
        return msgspec.json.encode({
            "sent": sent, "answer": answer, "charge_points": fleet.charge_points, "booted": fleet.booted,
            "steps": fleet.steps, "step_readings": fleet.step_readings, "reconnects": fleet.reconnects,
            "drops": fleet.drops, "errors": fleet.errors, "lag": fleet.pace.worst_lag,
            "cpu_seconds": round(time.process_time(), 2),
        }) + b"\n"


async def _worker(config: dict[str, Any], part: int) -> None:
    groups = msgspec.convert(config["groups"], list[ChargePointGroup])
    parts = int(config["parts"])
    fleet = ChargePointFleet(groups, seed=int(config["seed"]), part=part, parts=parts,
                             boots_in_flight=max(8, 64 // parts))
    books = _Books(fleet)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer

    def write(message: bytes) -> None:
        out.write(message)
        out.flush()

    async def tick() -> None:
        while True:
            await asyncio.sleep(BOOKS_EVERY)  # the books' pace while the charge points run
            write(books.message())

    ticker: asyncio.Task[None] | None = None
    while line := await reader.readline():
        command = msgspec.json.decode(line)
        what = command["do"]
        if what == "boot":
            await fleet.boot(int(config["port"]))
        elif what == "run":
            fleet.run(float(command["t0"]))
            ticker = asyncio.create_task(tick())
        elif what == "drop":
            fleet.drop(command["idents"])
        elif what in ("stop", "close"):
            if ticker is not None:
                ticker.cancel()
                ticker = None
            await (fleet.stop_sending() if what == "stop" else fleet.close())
        write(books.message(answer=what != "drop"))
        if what == "close":
            return


def main(argv: list[str]) -> int:
    config, part = msgspec.json.decode(argv[0]), int(argv[1])
    asyncio.run(_worker(config, part))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
