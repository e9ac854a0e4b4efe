"""The uplink contract, one suite over every uplink (file, mqtt, influxdb).

Each test drives the real path: window batches committed to a real outbox (SQLite, on its own
thread as in the runtime), read and sent by `gateway/uplinks/runner.py`, acknowledged through
outbox commits, received by a real peer on loopback. What every uplink must show:

- a batch is acknowledged (the uplink's outbox cursor passes it) once the platform has it;
- a transient failure (file: the output path blocked; mqtt: the broker stopped; influxdb:
  HTTP 503) acknowledges nothing, keeps every batch, and after recovery delivers them all, the
  ones first sent after recovery oldest first;
- a batch the platform refuses as malformed (influxdb: HTTP 400; mqtt: PUBACK "packet too
  large" from a broker with a message size limit) goes to the dead-letter table and the queue
  goes on. The file uplink has no platform that could refuse a batch: skipped.

The runner keeps one batch in flight (`max_in_flight = 1`) so arrival order is send order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.backoff import Backoff
from gateway.model import Reading
from gateway.outbox import Commit, Outbox
from gateway.uplinks import file as file_uplink
from gateway.uplinks import influxdb, mqtt
from gateway.uplinks.base import Uplink, UplinkContext
from gateway.uplinks.runner import UplinkRunner
from gateway.windows import Aggregator
from simulators.platform.receiver import PlatformReceiver
from tests.support.batches import read_batches
from tests.support.mosquitto import Broker
from tests.support.wait import async_wait_for
from tests.uplinks.conftest import ScriptedHttpServer, VictoriaMetrics

UPLINKS = ("file", "mqtt", "influxdb")
DEVICES = 3  # window records per batch: one temperature window per device
BATCHES = 6


# Batch seq n (from 1) holds windows starting at BASE + 60 * (n - 1): two hours ago, so
# VictoriaMetrics takes them, and a line protocol point names its batch by its timestamp.
BASE = (int(time.time()) // 60 - 120) * 60


def window_start(index: int) -> int:
    """Start of the windows of the `index`-th batch stored (0-based)."""
    return BASE + 60 * index


def seq_of(start: int) -> int:
    return (start - BASE) // 60 + 1


def closed_windows(index: int) -> Commit:
    start = window_start(index)
    aggregator = Aggregator(window=60, grace=0, now=start)
    for device in range(DEVICES):
        aggregator.add(Reading(f"lora:00000000000000{device:02x}", "temperature", 20.0 + device,
                               start + 1))
    return Commit(now=start + 60, close=aggregator.close_due(start + 60))


# ------------------------------------------------------------------ the platform side of each

class Peer:
    """One uplink's platform: builds the uplink config, breaks and heals the link, and says
    which batches arrived, as outbox seqs in arrival order (duplicates kept)."""

    name = ""
    gateway = "gw-contract"

    def config(self, **common: Any) -> Any:
        raise NotImplementedError

    def arrived(self) -> list[int]:
        raise NotImplementedError

    async def break_link(self) -> None:
        raise NotImplementedError

    async def heal_link(self) -> None:
        raise NotImplementedError

    async def refuse_next(self) -> None:
        """Make the platform refuse the next batch as malformed."""
        pytest.skip(f"the {self.name} uplink has no platform that refuses a batch as malformed")

    async def close(self) -> None:
        pass


class FilePeer(Peer):
    name = "file"

    def __init__(self, tmp_path: Path) -> None:
        self.directory = tmp_path / "out"
        self.current = self.directory / "batches.jsonl.gz"

    def config(self, **common: Any) -> Any:
        return file_uplink.Config(type="file", directory=str(self.directory), **common)

    def arrived(self) -> list[int]:
        if not self.current.is_file():
            return []
        return [doc.seq for doc in read_batches(self.current)]

    async def break_link(self) -> None:
        # Running as root, a read-only mode does not stop a write: a directory where the file
        # should be does (IsADirectoryError), like a folder that cannot be written.
        if self.current.is_file():
            self.current.rename(self.directory / "before-outage.jsonl.gz")
        self.current.mkdir(parents=True)

    async def heal_link(self) -> None:
        self.current.rmdir()

    def arrived_all(self) -> list[int]:
        earlier = self.directory / "before-outage.jsonl.gz"
        before = [doc.seq for doc in read_batches(earlier)] if earlier.exists() else []
        return before + self.arrived()


class MqttPeer(Peer):
    name = "mqtt"

    def __init__(self, tmp_path: Path, max_packet_size: int = 0) -> None:
        self.broker = SizeLimitedBroker(workdir=tmp_path, max_packet_size=max_packet_size)
        self.receiver: PlatformReceiver | None = None

    async def start(self) -> MqttPeer:
        await asyncio.to_thread(self.broker.start)
        self.receiver = PlatformReceiver(self.broker.host, self.broker.port)
        await self.receiver.start()
        return self

    def config(self, **common: Any) -> Any:
        # require_subscriber: a PUBACK counts only once the platform's receiver is subscribed
        return mqtt.Config(type="mqtt", host=self.broker.host, port=self.broker.port,
                           require_subscriber=True, connect_timeout=2.0, ack_timeout=5.0,
                           **common)

    def arrived(self) -> list[int]:
        assert self.receiver is not None
        return [seq for _, seq, is_event in list(self.receiver.ledger.arrivals) if not is_event]

    async def break_link(self) -> None:
        await asyncio.to_thread(self.broker.stop)

    async def heal_link(self) -> None:
        await asyncio.to_thread(self.broker.restart)

    async def close(self) -> None:
        if self.receiver is not None:
            await self.receiver.stop()
        await asyncio.to_thread(self.broker.stop)


class Mqtt311Peer(MqttPeer):
    """MQTT 3.1.1: the CONNACK cannot announce a packet limit, so the uplink is told the
    broker's (max_packet_size); no PUBACK reason codes either, so no require_subscriber."""

    def config(self, **common: Any) -> Any:
        return mqtt.Config(type="mqtt", host=self.broker.host, port=self.broker.port, protocol="3.1.1",
                           max_packet_size=self.broker.max_packet_size, connect_timeout=2.0,
                           ack_timeout=5.0, **common)


@dataclass
class SizeLimitedBroker(Broker):
    """Mosquitto with `max_packet_size`: it announces the limit in its CONNACK (Maximum Packet
    Size, MQTT 5.0 section 3.2.2.3.6) and drops a larger PUBLISH, closing the connection."""

    max_packet_size: int = 0

    def _write_config(self) -> Path:
        path = super()._write_config()
        if self.max_packet_size:
            with path.open("a") as config:
                config.write(f"max_packet_size {self.max_packet_size}\n")
        return path


class SwitchedAnswer:
    """An answer for the scripted HTTP server that the test switches between 204 and an error,
    noting which request got which status (one request at a time: max_in_flight = 1)."""

    def __init__(self, server: ScriptedHttpServer) -> None:
        self.server = server
        self.error: int | None = None
        self.error_once = False
        self.body = b""
        self.headers: dict[str, str] = {}
        self.max_lines = None
        self.statuses: list[tuple[int, int]] = []  # (request index, status answered)

    @property
    def status(self) -> int:
        status = self.error if self.error is not None else 204
        if self.error_once:
            self.error, self.error_once = None, False
        self.statuses.append((len(self.server.requests) - 1, status))
        return status


class InfluxPeer(Peer):
    """InfluxDB over the scripted HTTP server (503 and 400 cannot be made to happen on a real
    server); the acknowledgement test uses VictoriaMetrics instead (`VictoriaPeer`)."""

    name = "influxdb"

    def __init__(self, server: ScriptedHttpServer) -> None:
        self.server = server
        self.answer = SwitchedAnswer(server)
        server.script = [self.answer]  # type: ignore[list-item]  # duck-typed ScriptedAnswer

    def config(self, **common: Any) -> Any:
        return influxdb.Config(type="influxdb", url=self.server.url, bucket="edge", timeout=5.0,
                               **common)

    def arrived(self) -> list[int]:
        starts: list[int] = []
        for index, status in list(self.answer.statuses):
            if status != 204:
                continue
            _, _, body = self.server.requests[index]
            stamps = {int(line.rsplit(b" ", 1)[1]) // 1000 for line in body.splitlines() if line}
            assert len(stamps) == 1, body  # one batch per request, all windows of one start
            starts.append(seq_of(stamps.pop()))
        return starts

    async def break_link(self) -> None:
        self.answer.error = 503

    async def heal_link(self) -> None:
        self.answer.error = None

    async def refuse_next(self) -> None:
        self.answer.error, self.answer.error_once = 400, True


class VictoriaPeer(Peer):
    name = "influxdb"

    def __init__(self, victoria: VictoriaMetrics) -> None:
        self.victoria = victoria
        self.gateway = f"gw-contract-{time.monotonic_ns()}"

    def config(self, **common: Any) -> Any:
        return influxdb.Config(type="influxdb", url=self.victoria.url, bucket="edge",
                               token="ignored-by-vm", **common)

    def arrived(self) -> list[int]:
        starts: set[int] = set()
        for series in self.victoria.export(f'temperature_count{{gateway="{self.gateway}"}}'):
            starts.update(seq_of(ts // 1000) for ts in series["timestamps"])
        return sorted(starts)


# ------------------------------------------------------------------ outbox + runner

@dataclass
class Harness:
    """A real outbox on its own thread, one runner, and the tick that commits its acks."""

    tmp_path: Path
    peer: Peer
    executor: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="outbox"))
    stored: int = 0

    def __post_init__(self) -> None:
        self.name = self.peer.name
        self.gateway = self.peer.gateway
        self.outbox = Outbox(self.tmp_path / "outbox.sqlite", gateway_id=self.gateway,
                             uplinks=[self.name], window=60, max_lateness=3600,
                             max_bytes=1 << 30, batch_max_records=DEVICES)
        self.ctx = UplinkContext(self.name, gateway_id=self.gateway, state_dir=str(self.tmp_path))
        config = self.peer.config(name=self.name, max_in_flight=1)
        self.uplink: Uplink[Any] = _load(self.name)(config, self.ctx)
        self.runner = UplinkRunner(self.uplink, self.ctx, self.call,
                                   backoff=Backoff(0.05, 0.3))

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, self.outbox, *args)

    async def store(self, count: int) -> list[int]:
        """Commit `count` batches of closed windows, one commit each; returns their seqs."""
        seqs = []
        for _ in range(count):
            report = await self.call(Outbox.commit, closed_windows(self.stored))
            assert report.batches == 1
            self.stored += 1
            seqs.append(self.stored)
        self.runner.wake.set()
        return seqs

    async def tick(self) -> None:
        """What the runtime's tick does with a runner's results: one commit of them."""
        acks, dead = self.runner.take_acks()
        if acks or dead:
            await self.call(Outbox.commit, Commit(now=time.time(), acks={self.name: acks},
                                                  dead=dead))

    async def cursor(self) -> int:
        await self.tick()
        return int(await self.call(lambda outbox: outbox.cursor(self.name)))

    async def kept(self) -> int:
        """Batches still in the outbox."""
        return int(await self.call(
            lambda outbox: outbox.db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]))

    async def dead_letters(self) -> list[tuple[str, int, str]]:
        await self.tick()
        return list(await self.call(Outbox.dead_letter_rows))


def _load(name: str) -> Any:
    module = {"file": file_uplink, "mqtt": mqtt, "influxdb": influxdb}[name]
    return module.load_uplink()


@contextlib.asynccontextmanager
async def running(harness: Harness) -> AsyncIterator[Harness]:
    await harness.call(Outbox.open)
    task = asyncio.create_task(harness.runner.run())
    try:
        yield harness
    finally:
        await harness.runner.stop(2.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await harness.tick()
        await harness.call(Outbox.close)
        harness.executor.shutdown(wait=True)
        await harness.peer.close()


async def make_peer(kind: str, tmp_path: Path, request: pytest.FixtureRequest,
                    *, for_acks: bool = False, size_limit: int = 0) -> Peer:
    if kind == "file":
        return FilePeer(tmp_path)
    if kind in ("mqtt", "mqtt-3.1.1"):
        (tmp_path / "broker").mkdir()
        peer_class = MqttPeer if kind == "mqtt" else Mqtt311Peer
        return await peer_class(tmp_path / "broker", max_packet_size=size_limit).start()
    if for_acks:
        return VictoriaPeer(request.getfixturevalue("victoria"))
    return InfluxPeer(request.getfixturevalue("scripted_http"))


# ------------------------------------------------------------------ the contract

@pytest.mark.parametrize("kind", UPLINKS)
async def test_a_batch_is_acknowledged_once_delivered(kind: str, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    peer = await make_peer(kind, tmp_path, request, for_acks=True)
    harness = Harness(tmp_path, peer)
    async with running(harness):
        seqs = await harness.store(BATCHES)
        await async_wait_for(lambda: _equals(harness.cursor(), BATCHES), timeout=30,
                             what=f"{kind}: every batch acknowledged")
        # acknowledged means the platform has it: everything is there, once
        arrived = await async_wait_for(lambda: _at_least(peer.arrived, BATCHES), timeout=30,
                                       what=f"{kind}: every batch at the platform")
        assert sorted(arrived) == seqs
        assert await harness.kept() == 0  # acknowledged by the only uplink: deleted
    assert harness.runner.forwarded_batches == BATCHES
    assert harness.runner.forwarded_records == BATCHES * DEVICES
    assert harness.runner.failures == 0
    assert harness.runner.dead_lettered == 0


@pytest.mark.parametrize("kind", UPLINKS)
async def test_transient_failure_keeps_batches_and_delivers_them_in_order_after_recovery(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    peer = await make_peer(kind, tmp_path, request)
    harness = Harness(tmp_path, peer)
    async with running(harness):
        first = await harness.store(2)
        await async_wait_for(lambda: _equals(harness.cursor(), 2), timeout=30,
                             what=f"{kind}: the first batches acknowledged")
        await peer.break_link()
        during = await harness.store(BATCHES)
        await async_wait_for(lambda: harness.runner.failures >= 2, timeout=30,
                             what=f"{kind}: sends failing")
        assert await harness.cursor() == 2  # nothing acknowledged during the outage
        assert await harness.kept() == BATCHES  # every batch of the outage kept
        await peer.heal_link()
        await async_wait_for(lambda: _equals(harness.cursor(), 2 + BATCHES), timeout=60,
                             what=f"{kind}: the backlog acknowledged after recovery")
        everything = peer.arrived_all if isinstance(peer, FilePeer) else peer.arrived
        await async_wait_for(lambda: set(first + during) <= set(everything()), timeout=30,
                             what=f"{kind}: every batch at the platform")
        arrived_all = everything()
        assert await harness.kept() == 0
    # Oldest first: the order in which batches first arrived is the order they were stored.
    # (At least once: MQTT may bring a batch that was in flight at the outage again.)
    first_arrivals = list(dict.fromkeys(arrived_all))
    assert first_arrivals == first + during
    if kind != "mqtt":
        assert arrived_all == first + during  # no duplicates where delivery is synchronous
    assert harness.runner.forwarded_batches == 2 + BATCHES
    assert harness.runner.dead_lettered == 0


@pytest.mark.parametrize("kind", [
    "file",
    # MQTT: the broker's CONNACK names its Maximum Packet Size (MQTT 5.0 3.2.2.3.6); a batch
    # over it is refused before it is sent
    pytest.param("mqtt", marks=[pytest.mark.slow]),
    # MQTT 3.1.1: the same broker limit, known to the uplink from its max_packet_size (without
    # it the broker closes the connection on the batch and it was sent again for ever)
    pytest.param("mqtt-3.1.1", marks=[pytest.mark.slow]),
    "influxdb",
])
async def test_a_malformed_batch_goes_to_dead_letters_and_the_queue_goes_on(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if kind == "file":
        pytest.skip("the file uplink has no platform that refuses a batch as malformed")
    # MQTT: a broker that takes no packet much larger than the normal batches
    limit = 0
    if kind.startswith("mqtt"):
        limit = max(len(closed_windows_payload(i)) for i in range(BATCHES + 1)) + 256
    peer = await make_peer(kind, tmp_path, request, size_limit=limit)
    harness = Harness(tmp_path, peer)
    async with running(harness):
        before = await harness.store(2)
        await async_wait_for(lambda: _equals(harness.cursor(), 2), timeout=30,
                             what=f"{kind}: the first batches acknowledged")
        if kind.startswith("mqtt"):
            refused_seq = await store_oversized(harness, limit)
        else:
            await peer.refuse_next()
            await harness.store(1)
            refused_seq = 3
        after = await harness.store(3)
        await async_wait_for(lambda: _equals(harness.cursor(), 6), timeout=30,
                             what=f"{kind}: the queue went on past the refused batch")
        dead = await harness.dead_letters()
        await async_wait_for(lambda: set(before + after) <= set(peer.arrived()), timeout=30,
                             what=f"{kind}: the batches around it at the platform")
        assert await harness.kept() == 0
    assert [(name, seq) for name, seq, _ in dead] == [(peer.name, refused_seq)]
    assert harness.runner.dead_lettered == 1
    assert harness.runner.forwarded_batches == 5
    assert peer.arrived() == before + after


def closed_windows_payload(index: int) -> bytes:
    """The stored size of a normal batch (as the outbox would write it), for the MQTT limit."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(Path(tmp) / "o.sqlite", gateway_id="gw-contract", uplinks=["x"],
                        window=60, max_lateness=3600, max_bytes=1 << 30,
                        batch_max_records=DEVICES)
        outbox.open()
        outbox.commit(closed_windows(index))
        payload = outbox.pending("x", set(), 1)[0].payload
        outbox.close()
    return bytes(payload)


async def store_oversized(harness: Harness, limit: int) -> int:
    """Store one batch larger than the broker's limit (many devices' windows with random
    names, which gzip cannot shrink below it); returns its seq."""
    import secrets

    start = window_start(harness.stored)
    aggregator = Aggregator(window=60, grace=0, now=start)
    for _ in range(limit // 8):
        aggregator.add(Reading(f"lora:{secrets.token_hex(8)}", "temperature", 1.0, start + 1))
    commit = Commit(now=start + 60, close=aggregator.close_due(start + 60))
    harness.outbox.batch_max_records = 1 << 20  # one batch, however many windows
    report = await harness.call(Outbox.commit, commit)
    harness.outbox.batch_max_records = DEVICES
    assert report.batches == 1
    harness.stored += 1
    harness.runner.wake.set()
    seq = int(await harness.call(
        lambda outbox: outbox.db.execute("SELECT MAX(seq) FROM batches").fetchone()[0]))
    size = await harness.call(
        lambda outbox: outbox.db.execute("SELECT bytes FROM batches WHERE seq=?", (seq,)).fetchone()[0])
    assert size > limit
    return seq


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


def _at_least(arrived: Callable[[], list[int]], count: int) -> list[int] | None:
    got = arrived()
    return got if len(got) >= count else None
