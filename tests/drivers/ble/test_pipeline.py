"""Classification, dedup, replay guard (with persistence), allowlist and config validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble import Config
from drivers.ble.decoders import BTHOME_UUID, ENVIRONMENTAL_SENSING_UUID, RUUVI_COMPANY_ID, bthome
from drivers.ble.dedup import Deduplicator, ReplayGuard, counter_ahead
from drivers.ble.errors import BleDecodeError
from drivers.ble.pipeline import AdvertisementPipeline, Outcome
from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.drivers.ble import vectors as v

RUUVI_MAC = "CB:B8:33:4C:88:4F"
RUUVI = bytes.fromhex(v.RUUVI[0][2])
ENC_MAC = ":".join(v.BTHOME_MAC[i : i + 2] for i in range(0, 12, 2))
KEYS = {ENC_MAC: bytes.fromhex(v.BTHOME_KEY)}


def test_same_sequence_is_one_reading_set_with_rssi() -> None:
    pipeline = AdvertisementPipeline()
    outcome, readings = pipeline.process(RUUVI_MAC.lower(), {RUUVI_COMPANY_ID: RUUVI}, {}, -61, 1.0)
    assert outcome == "" and {r.device for r in readings} == {"ble:" + RUUVI_MAC}
    assert [r.value for r in readings if r.metric == "rssi"] == [-61.0]
    assert pipeline.process(RUUVI_MAC, {RUUVI_COMPANY_ID: RUUVI}, {}, -70, 2.0) == (Outcome.DUPLICATE, [])
    # The next measurement sequence is new again.
    next_frame = RUUVI[:16] + (206).to_bytes(2, "big") + RUUVI[18:]
    assert pipeline.process(RUUVI_MAC, {RUUVI_COMPANY_ID: next_frame}, {}, -70, 3.0)[0] == ""


def test_formats_without_sequence_dedup_on_payload() -> None:
    pipeline = AdvertisementPipeline(emit_rssi=False)
    frame = bytes.fromhex(v.RUUVI[4][2])  # data format 3 has no sequence number
    first = pipeline.process(RUUVI_MAC, {RUUVI_COMPANY_ID: frame}, {}, None, 1.0)
    assert first[0] == "" and all(r.metric != "rssi" for r in first[1])
    assert pipeline.process(RUUVI_MAC, {RUUVI_COMPANY_ID: frame}, {}, None, 2.0)[0] == Outcome.DUPLICATE


def test_a_restart_between_two_repeats_does_not_count_the_measurement_again(tmp_path: Path) -> None:
    """Issue 17: a tag repeats one measurement over several advertisements; the gateway stopped
    (cleanly) after the first and started before the next must not count it twice."""
    seq_frame = RUUVI
    no_seq_frame = bytes.fromhex(v.RUUVI[4][2])  # data format 3: identified by its payload
    other_mac = "CB:B8:33:4C:88:50"
    before = AdvertisementPipeline(dedup=Deduplicator(tmp_path))
    assert before.process(RUUVI_MAC, {RUUVI_COMPANY_ID: seq_frame}, {}, -61, 1.0)[0] == ""
    assert before.process(other_mac, {RUUVI_COMPANY_ID: no_seq_frame}, {}, -61, 1.0)[0] == ""
    before.dedup.save()
    after = AdvertisementPipeline(dedup=Deduplicator(tmp_path))
    assert after.process(RUUVI_MAC, {RUUVI_COMPANY_ID: seq_frame}, {}, -65, 2.0) == (Outcome.DUPLICATE, [])
    assert after.process(other_mac, {RUUVI_COMPANY_ID: no_seq_frame}, {}, -65, 2.0) == (Outcome.DUPLICATE, [])
    next_frame = RUUVI[:16] + (206).to_bytes(2, "big") + RUUVI[18:]
    assert after.process(RUUVI_MAC, {RUUVI_COMPANY_ID: next_frame}, {}, -65, 3.0)[0] == ""
    # without the saved state (the old behaviour) the repeat was counted again
    forgetful = AdvertisementPipeline()
    assert forgetful.process(RUUVI_MAC, {RUUVI_COMPANY_ID: seq_frame}, {}, -65, 2.0)[0] == ""
    # a damaged file forgets, it does not fail
    (tmp_path / Deduplicator.FILE_NAME).write_text("{not json")
    assert len(Deduplicator(tmp_path)) == 0


def test_a_driver_restart_in_one_process_leaves_no_stale_file_for_a_later_crash(tmp_path: Path) -> None:
    """The driver's stop writes the last measurements for the next process. A supervisor restart
    stops and runs the same driver: it keeps them in memory and removes the file, so a crash
    later does not start the next process on identities from long before; the next stop writes
    them again (also when nothing new came since)."""
    pipeline = AdvertisementPipeline(dedup=Deduplicator(tmp_path))
    assert pipeline.process(RUUVI_MAC, {RUUVI_COMPANY_ID: RUUVI}, {}, -61, 1.0)[0] == ""
    pipeline.dedup.save()  # the stop before the restart
    saved = tmp_path / Deduplicator.FILE_NAME
    assert saved.exists()
    pipeline.dedup.forget_saved()  # the restarted run
    assert not saved.exists()
    assert pipeline.process(RUUVI_MAC, {RUUVI_COMPANY_ID: RUUVI}, {}, -62, 2.0) == (Outcome.DUPLICATE, [])
    pipeline.dedup.save()  # the final stop, nothing new since
    assert len(Deduplicator(tmp_path)) == 1


def test_unknown_bthome_object_keeps_earlier_readings_and_is_counted() -> None:
    counted: list[str] = []
    pipeline = AdvertisementPipeline(count=counted.append, emit_rssi=False)
    outcome, readings = pipeline.process("A4:C1:38:00:00:02", {}, {BTHOME_UUID: bytes.fromhex("4002CA09FE0103BF13")},
                                         -60, 1.0)
    assert outcome == "" and [(r.metric, r.value) for r in readings] == [("temperature", 25.06)]
    assert counted == [Outcome.UNKNOWN_OBJECT]


def test_bthome_event_outside_the_table_is_counted() -> None:
    counted: list[str] = []
    pipeline = AdvertisementPipeline(count=counted.append, emit_rssi=False)
    outcome, readings = pipeline.process("A4:C1:38:00:00:03", {}, {BTHOME_UUID: bytes.fromhex("403A7F02CA09")},
                                         -60, 1.0)
    assert outcome == "" and [(r.metric, r.value) for r in readings] == [("temperature", 25.06)]
    assert counted == [Outcome.UNKNOWN_EVENT]


def test_unrecognised_and_not_allowlisted_are_ignored() -> None:
    pipeline = AdvertisementPipeline(allow=frozenset({"AA:AA:AA:AA:AA:AA"}))
    assert pipeline.process(RUUVI_MAC, {RUUVI_COMPANY_ID: RUUVI}, {}, -60, 1.0)[0] == Outcome.IGNORED
    open_pipeline = AdvertisementPipeline()
    assert open_pipeline.process(RUUVI_MAC, {0x004C: b"\x02\x15"}, {"0000feaa-0000-1000-8000-00805f9b34fb": b"x"},
                                 -60, 1.0)[0] == Outcome.IGNORED


def test_pvvx_and_bthome_routed_by_service_uuid() -> None:
    pipeline = AdvertisementPipeline()
    assert pipeline.process("A4:C1:38:12:34:56", {}, {ENVIRONMENTAL_SENSING_UUID: bytes.fromhex(v.PVVX[0][2])},
                            -60, 1.0)[0] == ""
    assert pipeline.process("A4:C1:38:00:00:01", {}, {BTHOME_UUID: bytes.fromhex("4002CA09")}, -60, 1.0)[0] == ""


def test_encrypted_repeat_is_duplicate_and_older_counter_is_replay(tmp_path: Path) -> None:
    guard = ReplayGuard(tmp_path)
    pipeline = AdvertisementPipeline(bthome_keys=KEYS, replay_guard=guard)
    service = {BTHOME_UUID: bytes.fromhex(v.BTHOME_ENCRYPTED)}
    outcome, readings = pipeline.process(ENC_MAC, {}, service, -60, 1.0)
    assert outcome == "" and {r.metric for r in readings} == {"temperature", "humidity", "rssi"}
    assert pipeline.process(ENC_MAC, {}, service, -60, 2.0)[0] == Outcome.DUPLICATE
    guard.save()

    # After a restart the remembered counter still holds: the last advertisement repeated gives
    # nothing, an older (recorded) one is refused as a replay, a newer one is accepted.
    restarted = AdvertisementPipeline(bthome_keys=KEYS, replay_guard=ReplayGuard(tmp_path))
    assert restarted.process(ENC_MAC, {}, service, -60, 3.0) == (Outcome.DUPLICATE, [])
    key, mac = KEYS[ENC_MAC], bytes.fromhex(v.BTHOME_MAC)
    older = bthome.encrypt(bytes.fromhex("02CA09"), key, mac, v.BTHOME_ENCRYPTED_COUNTER - 1)
    with pytest.raises(BleDecodeError) as info:
        restarted.process(ENC_MAC, {}, {BTHOME_UUID: older}, -60, 4.0)
    assert info.value.cause == "bthome_replay"
    newer = bthome.encrypt(bytes.fromhex("02CA09"), key, mac, v.BTHOME_ENCRYPTED_COUNTER + 1)
    assert restarted.process(ENC_MAC, {}, {BTHOME_UUID: newer}, -60, 5.0)[0] == ""


def test_tag_with_a_bind_key_accepts_only_encrypted_bthome() -> None:
    counted: list[str] = []
    pipeline = AdvertisementPipeline(bthome_keys=KEYS, count=counted.append)
    plain_bthome = {BTHOME_UUID: bytes.fromhex("40" "02CA09")}
    pvvx_frame = {ENVIRONMENTAL_SENSING_UUID: bytes.fromhex(v.PVVX[0][2])}
    refused = [({}, plain_bthome), ({}, pvvx_frame), ({RUUVI_COMPANY_ID: RUUVI}, {})]
    for attempt in range(2):  # refused every time, never remembered as the tag's last payload
        for manufacturer, service in refused:
            with pytest.raises(BleDecodeError) as info:
                pipeline.process(ENC_MAC.lower(), manufacturer, service, -60, 1.0 + attempt)
            assert info.value.cause == "bthome_unencrypted" and info.value.device == "ble:" + ENC_MAC
    # Its encrypted advertisement is accepted, also beside service data of another format.
    encrypted = {ENVIRONMENTAL_SENSING_UUID: bytes.fromhex(v.PVVX[0][2]),
                 BTHOME_UUID: bytes.fromhex(v.BTHOME_ENCRYPTED)}
    outcome, readings = pipeline.process(ENC_MAC, {}, encrypted, -60, 3.0)
    assert outcome == "" and {r.metric for r in readings} == {"temperature", "humidity", "rssi"}
    # A tag without a key still gets plain BTHome and pvvx through.
    assert pipeline.process("A4:C1:38:00:00:01", {}, plain_bthome, -60, 4.0)[0] == ""
    assert pipeline.process("A4:C1:38:12:34:56", {}, pvvx_frame, -60, 4.0)[0] == ""
    assert counted == []


def test_replay_guard_survives_a_damaged_file(tmp_path: Path) -> None:
    (tmp_path / ReplayGuard.FILE_NAME).write_text("{not json")
    guard = ReplayGuard(tmp_path)
    assert guard.check("ble:X", 5) and not guard.check("ble:X", 5) and not guard.check("ble:X", 4)


def _reference_frame(name: str) -> dict[str, bytes]:
    return {BTHOME_UUID: bytes.fromhex(v.BTHOME_COUNTER_FRAMES[name][1])}


def test_reference_counter_frames_replay_and_wrap_across_a_restart(tmp_path: Path) -> None:
    """bthome-ble's counter tests: a higher counter is accepted, a lower one refused, and 0
    after 2^32 - 1 accepted, here also when a restart falls between the two."""
    pipeline = AdvertisementPipeline(bthome_keys=KEYS, replay_guard=ReplayGuard(tmp_path), emit_rssi=False)
    assert pipeline.process(ENC_MAC, {}, _reference_frame("first"), -60, 1.0)[0] == ""
    assert pipeline.process(ENC_MAC, {}, _reference_frame("next"), -60, 2.0)[0] == ""
    with pytest.raises(BleDecodeError) as info:
        pipeline.process(ENC_MAC, {}, _reference_frame("older"), -60, 3.0)
    assert info.value.cause == "bthome_replay"
    assert pipeline.replay.last("ble:" + ENC_MAC) == 1122868
    # 2^32 - 1 is not ahead of 1122868 (it is 1122869 behind it): refused too.
    with pytest.raises(BleDecodeError) as info:
        pipeline.process(ENC_MAC, {}, _reference_frame("last before wrap"), -60, 3.5)
    assert info.value.cause == "bthome_replay"

    # The wrap, as the reference test runs it: a fresh state, 2^32 - 1, (restart), then 0.
    wrap_state = tmp_path / "wrap"
    pipeline = AdvertisementPipeline(bthome_keys=KEYS, replay_guard=ReplayGuard(wrap_state), emit_rssi=False)
    outcome, readings = pipeline.process(ENC_MAC, {}, _reference_frame("last before wrap"), -60, 4.0)
    assert outcome == "" and len(readings) == 2
    pipeline.replay.save()
    restarted = AdvertisementPipeline(bthome_keys=KEYS, replay_guard=ReplayGuard(wrap_state), emit_rssi=False)
    outcome, readings = restarted.process(ENC_MAC, {}, _reference_frame("wrapped"), -60, 5.0)
    assert outcome == "" and {r.metric for r in readings} == {"temperature", "humidity"}
    assert restarted.replay.last("ble:" + ENC_MAC) == 0
    # After the wrap, the frame from before it is old: refused, also after another restart.
    restarted.replay.save()
    again = AdvertisementPipeline(bthome_keys=KEYS, replay_guard=ReplayGuard(wrap_state), emit_rssi=False)
    with pytest.raises(BleDecodeError) as info:
        again.process(ENC_MAC, {}, _reference_frame("last before wrap"), -60, 6.0)
    assert info.value.cause == "bthome_replay"


@pytest.mark.parametrize(
    "counter,last,ahead",
    [(1, 0, True), (0, 0, False), (0, 1, False), (0, 2**32 - 1, True), (5, 2**32 - 3, True),
     (2**32 - 1, 0, False), (2**31 - 1, 0, True), (2**31, 0, False), (2**31 + 1, 0, False),
     (2**32 - 2, 2**32 - 1, False)],
)
def test_counter_ahead_is_serial_number_order(counter: int, last: int, ahead: bool) -> None:
    assert counter_ahead(counter, last) is ahead


@given(st.lists(st.integers(0, 2**32 - 1), max_size=30))
def test_replay_guard_accepts_only_counters_ahead_of_the_last_accepted(counters: list[int]) -> None:
    guard = ReplayGuard()
    last: int | None = None
    for counter in counters:
        expected = last is None or 0 < (counter - last) % 2**32 < 2**31
        assert guard.check("ble:X", counter) == expected
        if expected:
            last = counter
        assert guard.last("ble:X") == last


@given(st.integers(0, 2**32 - 1), st.integers(1, 2**31 - 1))
def test_replay_guard_steps_forward_across_the_wrap(start: int, step: int) -> None:
    guard = ReplayGuard()
    assert guard.check("ble:X", start)
    following = (start + step) % 2**32
    assert guard.check("ble:X", following)  # ahead, wrapped or not
    assert not guard.check("ble:X", start)  # the earlier one is a replay now


def test_config_through_the_gateway_loader() -> None:
    raw = {
        "gateway": {"id": "gw1"},
        "drivers": [{"type": "ble", "allow": ["AA:BB:CC:DD:EE:FF"], "stall_timeout": 60.0,
                     "bthome_keys": {"AA:BB:CC:DD:EE:FF": v.BTHOME_KEY}}],
    }
    config = parse_config(raw)
    settings = config.drivers[0]
    assert isinstance(settings, Config) and settings.name == "ble" and settings.scanning_mode == "active"


@pytest.mark.parametrize(
    "driver,fragment",
    [
        ({"allow": ["not-a-mac"]}, "allow: expected MAC addresses"),
        ({"bthome_keys": {"AA:BB:CC:DD:EE:FF": "abcd"}}, "expected 32 hex characters, found 4"),
        ({"stall_timeout": 0.0}, "stall_timeout: expected"),
        ({"scanning_mode": "sniff"}, "scanning_mode: expected"),
        ({"adapter": "usb0"}, "adapter: expected"),
    ],
)
def test_config_problems_name_the_key(driver, fragment) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"gateway": {"id": "gw1"}, "drivers": [{"type": "ble", **driver}]})
    assert fragment in str(info.value)


def test_package_import_stays_light() -> None:
    import subprocess
    import sys

    code = "import sys, drivers.ble; print(any(m.startswith(('bleak', 'cryptography', 'dbus')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
