"""Simulated tags -> private mock BlueZ -> bleak's real BlueZ backend -> driver -> windows."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.windows import Aggregator, finalize
from simulators.ble.tags import CARRIES, DEFAULT_KEY, FORMATS, SimTag, make_tags
from tests.support.wait import async_wait_for

# slow: end to end through a private D-Bus and the mock BlueZ (make test-fast leaves it out)
pytestmark = pytest.mark.slow

WRONG_KEY = "00112233445566778899aabbccddeeff"


def _keys(tags: list[SimTag]) -> dict[str, str]:
    return {t.mac: DEFAULT_KEY.hex() for t in tags if t.format == "bthome_enc"}


def _complete(harness, tags: list[SimTag]) -> bool:
    """Every measurement the tags delivered reached the driver: one reading per carried metric
    and one rssi each, and every repeat was counted as a duplicate (exact, not "at least")."""
    arrived = Counter((r.device, r.metric) for r in harness.readings)  # one pass, also for 500 tags
    for tag in tags:
        for metric in (*CARRIES[tag.format], "rssi"):
            if arrived["ble:" + tag.mac, metric] != len(tag.sent):
                return False
    repeats = sum(t.advertisements - len(t.sent) for t in tags)
    return harness.ctx.counters.get("duplicate_advertisements", 0) == repeats


async def _drain(sim, harness, tags: list[SimTag]) -> None:
    """Stop the tags (no advertisement in flight), then wait until the driver handled all."""
    await sim.pause()
    await async_wait_for(lambda: _complete(harness, tags), timeout=15,
                         what="driver to handle every delivered advertisement exactly once")


async def test_every_format_end_to_end_into_windows(simulator, harness) -> None:
    tags = make_tags(2)
    sim = await simulator(tags, interval=0.1, repeats=3)
    harness.start(bthome_keys=_keys(tags), stall_timeout=30)
    await async_wait_for(lambda: all(len(t.sent) >= 4 for t in tags), timeout=20, what="4 measurements per tag")
    await _drain(sim, harness, tags)

    aggregator = Aggregator(window=3600, grace=0)
    for reading in harness.readings:
        aggregator.add(reading)
    records = {
        (device, metric): finalize(device, metric, start, aggregator.window, acc)
        for start, (device, metric), acc in aggregator.flush_all().closed
    }
    assert harness.ctx.decode_errors == {}
    assert {t.format for t in tags} == set(FORMATS)
    for tag in tags:
        device = "ble:" + tag.mac
        for metric in CARRIES[tag.format]:
            record = records[(device, metric)]
            sent = [m[metric] for m in tag.sent]
            assert record.count == len(sent), (tag.format, metric)  # repeats collapsed, none lost
            assert record.min == pytest.approx(min(sent)), (tag.format, metric)
            assert record.max == pytest.approx(max(sent)), (tag.format, metric)
            assert record.last == pytest.approx(sent[-1]), (tag.format, metric)
            assert record.mean == pytest.approx(sum(sent) / len(sent)), (tag.format, metric)
        rssi = records[(device, "rssi")]
        assert rssi.count == len(tag.sent) and -90 <= rssi.min <= rssi.max <= -50
        assert rssi.unit == "dBm"
    # Every measurement was advertised three times; the repeats were counted, not emitted.
    repeats = sum(t.advertisements - len(t.sent) for t in tags)
    assert all(len(t.sent) == -(-t.advertisements // 3) for t in tags)  # the last may be partial
    assert harness.ctx.counters["duplicate_advertisements"] == repeats
    assert harness.ctx.counters.get("ignored_advertisements", 0) == 0
    assert records[("ble:" + tags[0].mac, "battery_voltage")].kind == "gauge"


async def test_encrypted_bthome_right_wrong_missing_key_plain_and_replay(simulator, harness) -> None:
    right, wrong, missing = (SimTag("bthome_enc", i) for i in range(3))
    plain = SimTag("bthome", 0)  # plaintext BTHome from a MAC that has a bind key: refused
    sim = await simulator([right, wrong, missing, plain], interval=0.1, repeats=2)
    keys = {right.mac: DEFAULT_KEY.hex(), wrong.mac: WRONG_KEY, plain.mac: DEFAULT_KEY.hex()}
    harness.start(bthome_keys=keys, stall_timeout=30)
    await async_wait_for(lambda: len(right.sent) >= 3, timeout=15, what="3 measurements")
    await sim.pause()
    errors = harness.ctx.decode_errors

    def all_handled() -> bool:
        # A refused advertisement is never remembered, so each repeat is refused again.
        return (_complete(harness, [right])
                and errors.get("bthome_bad_mic", 0) == wrong.advertisements
                and errors.get("bthome_no_key", 0) == missing.advertisements
                and errors.get("bthome_unencrypted", 0) == plain.advertisements)

    await async_wait_for(all_handled, timeout=15, what="every advertisement handled")
    assert [m["temperature"] for m in right.sent] == [r.value for r in harness.of(right.mac, "temperature")]
    assert harness.of(wrong.mac) == [] and harness.of(missing.mac) == [] and harness.of(plain.mac) == []
    assert set(errors) == {"bthome_bad_mic", "bthome_no_key", "bthome_unencrypted"}
    assert wrong.advertisements == missing.advertisements == plain.advertisements == right.advertisements >= 5

    # Replay: a correctly encrypted advertisement with an old counter is refused.
    before = len(harness.of(right.mac))
    right.counter -= 5
    right.measurement += 1000  # different content, so only the counter can refuse it
    await sim.send(right)
    await async_wait_for(lambda: errors.get("bthome_replay", 0) == 1, timeout=5, what="replay refused")
    assert len(harness.of(right.mac)) == before

    # A fresh counter is accepted again: one reading set (4 metrics + rssi).
    right.counter += 100
    await sim.send(right)
    await async_wait_for(lambda: len(harness.of(right.mac)) == before + 5, timeout=5, what="fresh counter accepted")
    fresh = {r.metric: r.value for r in harness.of(right.mac)[before:] if r.metric != "rssi"}
    assert fresh == pytest.approx({m: right.values()[m] for m in CARRIES["bthome_enc"]})
    assert errors["bthome_replay"] == 1


@pytest.mark.parametrize("mode", ["scanner", "adapter"])
async def test_recovery_after_a_stall(simulator, harness, mode) -> None:
    tags = [SimTag("ruuvi5", 0), SimTag("pvvx", 0)]
    sim = await simulator(tags, interval=0.05, repeats=1)
    # 1 s of silence is 20 advertising intervals: a busy machine does not fake a stall.
    harness.start(stall_timeout=1.0, power_off_seconds=0.05, restarts_before_power_cycle=1)
    await async_wait_for(lambda: len(harness.of(tags[0].mac)) > 0, timeout=10, what="first readings")
    counters = harness.ctx.counters
    assert counters.get("scanner_restarts", 0) == 0

    sim.stall(mode)
    stalled_at = len(harness.readings)
    await async_wait_for(lambda: counters.get("recoveries", 0) == 1 and len(harness.readings) > stalled_at,
                         timeout=20, what="recovery and readings again")
    # "scanner": the first restart helps. "adapter": it does not, the power cycle after it does.
    assert counters["scanner_restarts"] == 1
    if mode == "scanner":
        assert counters.get("adapter_power_cycles", 0) == 0 and sim.power_cycles == 0
    else:
        assert counters["adapter_power_cycles"] == 1 and sim.power_cycles == 1
    assert counters.get("recovery_failures", 0) == 0
    assert sim.stall_mode is None and harness.task is not None and not harness.task.done()


async def test_bluez_in_progress_is_retried_not_fatal(simulator, harness) -> None:
    tag = SimTag("bthome", 0)
    sim = await simulator([tag], interval=0.05)
    await sim.fail_next_discovery_starts(2)
    harness.start(stall_timeout=2)  # retry delay = min(0.5, stall_timeout / 8)
    await async_wait_for(lambda: harness.of(tag.mac), timeout=15, what="readings after InProgress")
    assert harness.ctx.counters["bluez_transient_errors"] == 2  # the two InProgress refusals
    assert sim.discovery_starts == 1


async def test_allowlist_and_passive_scanning(simulator, harness) -> None:
    allowed, other = SimTag("atc1441", 0), SimTag("atc1441", 1)
    # Passive scanning needs no discovery, so the tags would advertise before the scanner
    # listens; they start paused, and advertise once it does, so every one is accounted for.
    sim = await simulator([allowed, other], interval=0.05, require_discovery=False, paused=True)
    harness.start(allow=[allowed.mac.lower()], scanning_mode="passive", stall_timeout=30)
    await async_wait_for(lambda: harness.driver.scanner.running, timeout=15, what="passive scanner running")
    sim.resume()
    await async_wait_for(lambda: len(allowed.sent) >= 3, timeout=15, what="3 measurements advertised")
    await sim.pause()
    counters = harness.ctx.counters

    def all_handled() -> bool:
        return (_complete(harness, [allowed])
                and counters.get("ignored_advertisements", 0) == other.advertisements)

    await async_wait_for(all_handled, timeout=15, what="every advertisement handled")
    assert harness.of(other.mac) == [] and other.advertisements >= 3
    assert harness.ctx.decode_errors == {}


async def test_adapter_unplugged_and_back_is_never_fatal(simulator, harness) -> None:
    tag = SimTag("pvvx", 0)
    sim = await simulator([tag], interval=0.05, repeats=1)
    harness.start(stall_timeout=0.3, power_off_seconds=0.02)
    await async_wait_for(lambda: harness.of(tag.mac), timeout=10, what="first readings")
    counters = harness.ctx.counters

    await sim.unplug()
    await async_wait_for(lambda: counters.get("recovery_failures", 0) >= 2, timeout=15, what="failed recoveries")
    assert not harness.task.done()  # every failed step was counted, none ended the driver
    before = len(harness.of(tag.mac))
    await sim.replug()
    # The first advertisement after a failed step counts a recovery before its readings.
    await async_wait_for(lambda: counters.get("recoveries", 0) >= 1 and len(harness.of(tag.mac)) > before,
                         timeout=15, what="recovery and readings after replug")


async def test_500_tags_every_measurement_reaches_the_driver(simulator, harness) -> None:
    """Issue 12: the simulator holds 500+ tags on the mock BlueZ without an error, and every
    measurement it advertised reaches the driver through bleak's BlueZ backend, exactly once."""
    tags = make_tags(72)  # 72 per format, 504 tags
    sim = await simulator(tags, interval=0.5, repeats=2, paused=True)
    harness.start(bthome_keys=_keys(tags), stall_timeout=60)
    await async_wait_for(lambda: harness.driver.scanner.running, timeout=15, what="scanner running")
    sim.resume()
    await async_wait_for(lambda: min(len(t.sent) for t in tags) >= 3, timeout=60, what="3 measurements per tag")
    await sim.pause()
    await async_wait_for(lambda: _complete(harness, tags), timeout=30,
                         what="every advertisement of 504 tags handled exactly once")

    assert len(tags) == 504 and len({t.mac for t in tags}) == 504
    assert sim.errors == {} and sim.advertising
    assert harness.ctx.decode_errors == {}
    assert harness.ctx.counters.get("ignored_advertisements", 0) == 0
    assert sim.advertisements_sent == sum(t.advertisements for t in tags) >= 504 * 5
    assert {r.device for r in harness.readings} == {"ble:" + t.mac for t in tags}


async def test_simulator_counts_a_failed_round_and_reconnects(simulator, harness) -> None:
    tags = [SimTag("pvvx", 0), SimTag("bthome", 0)]
    sim = await simulator(tags, interval=0.05, repeats=1)
    harness.start(stall_timeout=30)
    await async_wait_for(lambda: len(tags[0].sent) >= 2, timeout=10, what="2 measurements")
    await sim.pause()
    sim.drop_connection()
    sent_before = sim.advertisements_sent
    sim.resume()
    # The first round after the drop fails for both tags (counted, not sent), then it goes on.
    await async_wait_for(lambda: sim.advertisements_sent >= sent_before + 4, timeout=10,
                         what="advertising again after the reconnect")
    await sim.pause()
    assert sim.errors == {"ConnectionError": 2}
    await async_wait_for(lambda: _complete(harness, tags), timeout=10, what="every sent advertisement handled")
    sim.errors.clear()  # seen and checked; the fixture asserts that no other test has any
