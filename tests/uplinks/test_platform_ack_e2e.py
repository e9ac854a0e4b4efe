"""A broker without persistence restarted mid-run, with the gateway as a real subprocess.

QoS 1 is hop by hop: with `ack = "broker"` the gateway deletes a batch once Mosquitto has it,
and a Mosquitto that restarts without persistence has forgotten the platform's subscription, so
what the gateway sends before the platform's consumer is back is acknowledged and dropped. With
`ack = "platform"` the same run loses nothing: the batch leaves the outbox only once the
receiver's ledger holds it.

The platform's consumer is held back until the gateway has sent into the empty broker: that
makes the race of the issue (gateway back before the consumer) happen every run rather than
sometimes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.platform import PlatformReceiver
from tests.support.mosquitto import Broker
from tests.support.wait import wait_for
from tests.uplinks.gateway_process import GatewayProcess, write_replay

pytestmark = pytest.mark.slow


def _devices(n: int) -> list[str]:
    return [f"lora:a84041000019{i:04x}" for i in range(n)]


@pytest.mark.parametrize("ack", ["broker", "platform"])
def test_broker_restart_without_persistence(tmp_path: Path, ack: str) -> None:
    (tmp_path / "broker").mkdir()
    broker = Broker(workdir=tmp_path / "broker").start()  # persistence false
    receiver = PlatformReceiver(broker.host, broker.port, ack=True)
    receiver.start_sync()
    total = write_replay(tmp_path / "readings.jsonl", _devices(8), steps=300, step_seconds=0.05)
    gateway = GatewayProcess(tmp_path, gateway_id=f"gw-ack-{ack}", replay=tmp_path / "readings.jsonl",
                             broker_port=broker.port,
                             uplink_extra=f'ack = "{ack}"\nplatform_ack_timeout = 2')
    # The PUBACK's "no matching subscribers" would hide the loss under MQTT 5; a 3.1.1 broker
    # or a platform with any other subscriber on the topic says nothing of the kind.
    gateway.config_path.write_text(gateway.config_path.read_text().replace(
        "require_subscriber = true", "require_subscriber = false"))

    def forwarded() -> float:
        return gateway.metric("uplink_forwarded_batches", uplink="mqtt")

    gateway.start()
    try:
        wait_for(lambda: gateway.alive() and receiver.report()["batches"] >= 1, timeout=30,
                 what="first batch at the platform")
        broker.stop()
        receiver.stop_sync()  # the consumer comes back after the gateway (see the docstring)
        wait_for(lambda: gateway.alive() and gateway.metric("uplink_failures", uplink="mqtt") >= 1
                 and gateway.metric("outbox_batches") >= 2, timeout=30,
                 what="a backlog during the outage")
        before = forwarded()
        broker.restart()
        if ack == "broker":
            wait_for(lambda: gateway.alive() and forwarded() >= before + 2, timeout=30,
                     what="batches counted delivered into a broker without the consumer")
        else:
            wait_for(lambda: gateway.alive() and gateway.metric(
                "uplink_events", uplink="mqtt", counter="platform_ack_timeouts") >= 1,
                timeout=30, what="a batch sent and not acknowledged by the platform")
            assert forwarded() == before
        receiver.start_sync()
        wait_for(lambda: gateway.alive() and gateway.metric("readings", driver="replay") == total
                 and gateway.metric("open_series") == 0 and gateway.metric("outbox_batches") == 0,
                 timeout=60, what="every reading in a batch and every batch acknowledged")
        made = int(forwarded())  # one stream from seq 1, no eviction: each batch counted once
        assert gateway.metric("outbox_evicted_batches") == 0
        assert gateway.terminate() == 0
    finally:
        if gateway.process is not None:
            gateway.kill()
        receiver.stop_sync()
        broker.stop()
    report = receiver.report()
    assert len(report["streams"]) == 1
    stream = next(iter(report["streams"]))
    received: set[int] = set().union(*(books.seqs for books in receiver.ledger.streams.values()))
    lost = set(range(1, made + 1)) - received
    print(f"ack={ack}: {made} batches made, {len(lost)} lost {sorted(lost)}, "
          f"{report['readings_covered']} of {total} readings covered")
    assert report["invalid"]["count"] == 0
    assert report["duplicates"]["windows"] == 0
    if ack == "broker":
        assert lost, "the broker restart lost nothing: the run did not show the failure"
        assert report["readings_covered"] < total
    else:
        assert lost == set()
        assert report["gaps"] == {}
        assert report["streams"][stream] == {"batches": made, "highest_seq": made}
        assert report["readings_covered"] == total
