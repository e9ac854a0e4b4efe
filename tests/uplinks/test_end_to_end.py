"""End to end: replay driver -> windows -> outbox -> MQTT uplink -> Mosquitto -> platform receiver,
with the gateway as a real subprocess. Outage, crash (SIGKILL) and a full outbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from simulators.platform import PlatformReceiver
from tests.support.mosquitto import Broker
from tests.support.wait import wait_for
from tests.uplinks.conftest import ScriptedAnswer, ScriptedHttpServer, VictoriaMetrics
from tests.uplinks.gateway_process import GatewayProcess, write_replay

pytestmark = pytest.mark.slow


class PersistentBroker(Broker):
    """Mosquitto that saves its sessions on shutdown, as a platform's broker must: QoS 1 is hop
    by hop, so what it acknowledged to the gateway but had not yet passed to the receiver would
    otherwise die with it. The receiver keeps a persistent session to match."""

    def _write_config(self) -> Path:
        path = super()._write_config()
        path.write_text(path.read_text().replace(
            "persistence false\n",
            f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"))
        return path


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = PersistentBroker(workdir=workdir).start()
    yield broker
    broker.stop()


@pytest.fixture
def receiver(broker: Broker):  # type: ignore[no-untyped-def]
    receiver = PlatformReceiver(broker.host, broker.port, client_id="platform-e2e",
                                session_expiry=3600)
    receiver.start_sync()
    yield receiver
    receiver.stop_sync()


def _devices(n: int) -> list[str]:
    return [f"lora:a84041000018{i:04x}" for i in range(n)]


def test_broker_outage_loses_nothing(tmp_path: Path, broker: Broker,
                                     receiver: PlatformReceiver) -> None:
    total = write_replay(tmp_path / "readings.jsonl", _devices(8), steps=100, step_seconds=0.05)
    gateway = GatewayProcess(tmp_path, gateway_id="gw-outage", replay=tmp_path / "readings.jsonl",
                             broker_port=broker.port).start()
    try:
        wait_for(lambda: gateway.alive() and receiver.report()["batches"] >= 1, timeout=20,
                 what="first batch delivered")
        broker.stop()
        # The gateway notices, keeps producing windows into its outbox, and backs off.
        wait_for(lambda: gateway.alive() and gateway.metric("uplink_failures", uplink="mqtt") >= 2
                 and gateway.metric("outbox_batches") >= 2, timeout=20,
                 what="failed sends and a backlog during the outage")
        broker.restart()
        wait_for(lambda: gateway.alive() and receiver.report()["readings_covered"] == total,
                 timeout=30, what="every reading covered after the outage")
        produced = gateway.metric("readings", driver="replay")
        assert gateway.terminate() == 0
    finally:
        if gateway.process is not None:
            gateway.kill()
    report = receiver.report()
    assert produced == total
    assert report["readings_covered"] == total
    assert report["gaps"] == {}
    assert report["invalid"]["count"] == 0
    # duplicates only as repeated batch ids: never a window counted twice under another id
    assert report["duplicates"]["windows"] == 0
    assert report["status"]["gw-outage"]["state"] == "offline"


def test_sigkill_while_forwarding_loses_nothing_closed(tmp_path: Path, broker: Broker,
                                                      receiver: PlatformReceiver) -> None:
    write_replay(tmp_path / "first.jsonl", _devices(6), steps=120, step_seconds=0.05)
    # Throttled drain so batches are still queued and in flight when the kill comes.
    gateway = GatewayProcess(tmp_path, gateway_id="gw-crash", replay=tmp_path / "first.jsonl",
                             broker_port=broker.port, batch_max_records=4,
                             uplink_extra="max_batches_per_second = 8.0\nmax_in_flight = 2")
    gateway.start()
    try:
        wait_for(lambda: gateway.alive() and receiver.report()["batches"] >= 3
                 and gateway.metric("outbox_batches") >= 2, timeout=20,
                 what="batches delivered and more queued")
        gateway.kill()
        # Everything closed before the kill is either at the receiver or in the database.
        stored = gateway.stored_batches()
        received_before = set(receiver.ledger.batch_ids)
        assert stored, "the kill came too late: nothing left to forward"
        highest_closed = stored[-1][0]
        # Restart on the same state directory with a short second recording.
        second = write_replay(tmp_path / "second.jsonl", _devices(1), steps=5, step_seconds=0.05)
        gateway.config_path.write_text(
            gateway.config_path.read_text().replace(str(tmp_path / "first.jsonl"),
                                                    str(tmp_path / "second.jsonl")))
        gateway.start()
        # up and serving (a SIGTERM before start-up would say nothing about delivery), then
        # everything stored at the kill delivered: some may have reached the receiver before
        # the kill, their acknowledgement not yet committed
        wait_for(lambda: gateway.alive() and gateway.metric("outbox_batches") >= 0, timeout=30,
                 what="the restarted gateway serving its metrics")
        wait_for(lambda: gateway.alive() and {b for _, b in stored} <= receiver.ledger.batch_ids
                 and gateway.metric("readings", driver="replay") == second, timeout=30,
                 what="every batch stored at the kill delivered after the restart")
        assert gateway.terminate() == 0
    finally:
        if gateway.process is not None:
            gateway.kill()
    report = receiver.report()
    # a lower bound: how many batches arrived before the kill is the clock's (the wait above)
    assert len(received_before) >= 3
    assert report["gaps"] == {}
    streams = report["streams"]
    assert len(streams) == 1  # same database, same stream after the restart
    assert next(iter(streams.values()))["highest_seq"] >= highest_closed
    assert report["duplicates"]["windows"] == 0
    assert report["invalid"]["count"] == 0


def test_full_outbox_evicts_oldest_and_receiver_names_them(tmp_path: Path, broker: Broker,
                                                           receiver: PlatformReceiver) -> None:
    # 300 devices x 2 metrics = 600 window records a second of noisy values, ~4 kB/s
    # compressed, against a 64 KiB outbox.
    write_replay(tmp_path / "readings.jsonl", _devices(300), steps=250, step_seconds=0.1, noisy=True)
    gateway = GatewayProcess(tmp_path, gateway_id="gw-evict", replay=tmp_path / "readings.jsonl",
                             broker_port=broker.port, max_bytes=64 * 1024, batch_max_records=20)
    gateway.start()
    try:
        wait_for(lambda: gateway.alive() and receiver.report()["batches"] >= 1, timeout=20,
                 what="first batch delivered")
        broker.stop()
        wait_for(lambda: gateway.alive() and gateway.metric("outbox_evicted_batches") >= 3,
                 timeout=30, what="evictions during the outage")
        broker.restart()
        # Drained: the recording is over, every window closed and the outbox empty.
        wait_for(lambda: gateway.alive() and gateway.metric("open_series") == 0
                 and gateway.metric("readings", driver="replay") == 250 * 600
                 and gateway.metric("outbox_batches") == 0, timeout=30, what="outbox drained")
        evicted_in_metrics = gateway.metric("outbox_evicted_batches")
        assert gateway.terminate() == 0
    finally:
        if gateway.process is not None:
            gateway.kill()
    evicted = gateway.evicted_seqs()
    report = receiver.report()
    assert evicted and evicted_in_metrics == len(evicted)
    assert report["gaps"] == {f"gw-evict/{next(iter(report['streams'])).split('/')[1]}":
                              sorted(evicted)}
    assert report["invalid"]["count"] == 0
    assert "evict" in gateway.log()  # the eviction was logged


def test_three_uplinks_each_with_its_own_cursor(
    tmp_path: Path, broker: Broker, receiver: PlatformReceiver, victoria: VictoriaMetrics,
    scripted_http: ScriptedHttpServer,
) -> None:
    """MQTT, InfluxDB (VictoriaMetrics) and a strict InfluxDB endpoint that refuses the first
    batch as malformed (dead letter) and then asks to wait (503, Retry-After: 2)."""
    total = write_replay(tmp_path / "readings.jsonl", _devices(3), steps=40, step_seconds=0.05)
    scripted_http.script = [
        ScriptedAnswer(400, b'{"code":"invalid","message":"unable to parse"}'),
        ScriptedAnswer(503, b"maintenance", {"Retry-After": "2"}),
        ScriptedAnswer(204),
    ]
    gateway = GatewayProcess(
        tmp_path, gateway_id="gw-three", replay=tmp_path / "readings.jsonl", broker_port=broker.port,
        batch_max_records=3,
        uplink_extra=f"""
[[uplinks]]
type = "influxdb"
name = "vm"
url = "{victoria.url}"

[[uplinks]]
type = "influxdb"
name = "strict"
url = "{scripted_http.url}"
""")
    gateway.start()
    try:
        # While "strict" honours Retry-After, the batches MQTT already delivered stay stored.
        wait_for(lambda: gateway.alive() and len(scripted_http.requests) == 2
                 and receiver.report()["batches"] >= 2 and gateway.metric("outbox_batches") >= 2,
                 timeout=20, what="batches kept for the uplink that has not acknowledged them")
        wait_for(lambda: gateway.alive() and receiver.report()["readings_covered"] == total
                 and gateway.metric("outbox_batches") == 0 and gateway.metric("open_series") == 0,
                 timeout=30, what="every uplink acknowledged every batch")
        dead = gateway.metric("uplink_dead_lettered", uplink="strict")
        forwarded = {name: gateway.metric("uplink_forwarded_batches", uplink=name) for name in ("mqtt", "strict")}
        assert gateway.terminate() == 0
    finally:
        if gateway.process is not None:
            gateway.kill()
    assert dead == 1
    with sqlite3.connect(gateway.state_dir / "outbox.sqlite") as db:
        rows = db.execute("SELECT uplink, seq, reason FROM dead_letters").fetchall()
    assert len(rows) == 1 and rows[0][0] == "strict" and "HTTP 400" in rows[0][2]
    # Retry-After honoured: the third request came no sooner than 2 s after the 503.
    assert scripted_http.times[2] - scripted_http.times[1] >= 2.0
    # What follows the dead letter went on: every batch but the dead one was acknowledged by
    # the strict endpoint, after one request refused (400) and one asked to wait (503).
    assert forwarded["strict"] == forwarded["mqtt"] - 1
    assert len(scripted_http.requests) == forwarded["strict"] + 2
    # VictoriaMetrics holds every reading as window counts.
    def counted() -> float:
        series = victoria.export('{gateway="gw-three",__name__=~".*_count"}')
        return sum(sum(s["values"]) for s in series)
    wait_for(lambda: counted() == total, timeout=20, interval=0.25, what="counts in VictoriaMetrics")
    assert receiver.report()["gaps"] == {}


def test_wrong_password_is_one_log_line_and_nothing_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Broker(workdir=tmp_path / "broker", users={"gw-pass": "s3cret"}).start()
    receiver = PlatformReceiver(broker.host, broker.port, username="gw-pass", password="s3cret")
    receiver.start_sync()
    total = write_replay(tmp_path / "readings.jsonl", _devices(2), steps=20, step_seconds=0.05)
    gateway = GatewayProcess(tmp_path, gateway_id="gw-pass", replay=tmp_path / "readings.jsonl",
                             broker_port=broker.port,
                             uplink_extra='username = "gw-pass"\npassword = "wrong"')
    try:
        gateway.start()
        wait_for(lambda: gateway.alive() and gateway.metric(
            "uplink_events", uplink="mqtt", counter="connect_failed_not_authorized") >= 3
            and gateway.metric("outbox_batches") >= 1
            and gateway.metric("readings", driver="replay") == total, timeout=20,
            what="refused, retried, the recording played")
        lines = [line for line in gateway.log().splitlines() if "not authorized" in line]
        assert len(lines) == 1, lines
        assert "mqtt connection to 127.0.0.1:" in lines[0]
        assert "broker refused the connection: not authorized (check username and password)" in lines[0]
        assert gateway.terminate() == 0
        assert receiver.report()["batches"] == 0
        # Fixed password (and a one-reading recording): everything stored or checkpointed
        # during the refusals is delivered.
        total += write_replay(tmp_path / "more.jsonl", ["lora:00000000000000ff"], steps=1,
                              step_seconds=0.05, metrics=("temperature",))
        gateway.config_path.write_text(
            gateway.config_path.read_text().replace('password = "wrong"', 'password = "s3cret"')
            .replace(str(tmp_path / "readings.jsonl"), str(tmp_path / "more.jsonl")))
        gateway.start()
        wait_for(lambda: gateway.alive() and receiver.report()["readings_covered"] == total,
                 timeout=20, what="delivery with the right password")
        assert gateway.terminate() == 0
    finally:
        if gateway.process is not None:
            gateway.kill()
        receiver.stop_sync()
        broker.stop()
    assert receiver.report()["gaps"] == {}
