"""Concentrator-mode logic without sockets: sessions, counters, replays, joins, dedup."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.lorawan import concentrator, phy
from drivers.lorawan.driver import LoRaWANDriver
from drivers.lorawan.errors import LoRaWANDecodeError
from drivers.lorawan.semtech_udp import RxPk
from drivers.lorawan.sessions import Session, SessionStore, extend_fcnt
from gateway.driver import DriverContext
from tests.drivers.lorawan.conftest import make_config

NWK = bytes.fromhex("44024241ed4ce9a68c6a8bc055233fd3")
APP = bytes.fromhex("ec925802ae430ca77fd3dd73cb2cc588")
ADDR = 0x49BE7DF1


def _store(tmp_path: Path) -> SessionStore:
    store = SessionStore(tmp_path / "sessions.json")
    store.put(Session(dev_eui="0000000000000001", dev_addr=ADDR, nwk_skey=NWK.hex(), app_skey=APP.hex(),
                      activation="abp"))
    return store


def _frame(fcnt: int, payload: bytes = b"\x03\x67\x01\x10", nwk: bytes = NWK) -> bytes:
    return phy.build_data_frame(nwk_skey=nwk, app_skey=APP, dev_addr=ADDR, fcnt32=fcnt, fport=1, payload=payload)


@pytest.mark.parametrize(("last", "fcnt16", "expected"), [
    (-1, 5, 5), (4, 5, 5), (5, 5, 5), (0x1FFFF, 0x0001, 0x20001), (0x10005, 0x0003, 0x10003),
    (0xFFFF, 0x0000, 0x10000), (100, 20000, 20000),
])
def test_extend_fcnt(last: int, fcnt16: int, expected: int) -> None:
    assert extend_fcnt(last, fcnt16) == expected


def test_uplink_counter_replay_and_rollover(tmp_path: Path) -> None:
    store = _store(tmp_path)
    up = concentrator.open_data_frame(_frame(0xFFFE), store)
    assert (up.fcnt, up.payload, up.dev_eui) == (0xFFFE, b"\x03\x67\x01\x10", "0000000000000001")
    assert concentrator.open_data_frame(_frame(0x10001), store).fcnt == 0x10001  # 16-bit wrap
    for old in (0x10001, 0xFFFE):
        with pytest.raises(LoRaWANDecodeError) as info:
            concentrator.open_data_frame(_frame(old), store)
        assert info.value.cause == "replay"


def test_bad_mic_and_unknown_devaddr(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(LoRaWANDecodeError) as info:
        concentrator.open_data_frame(_frame(1, nwk=bytes(16)), store)
    assert info.value.cause == "bad_mic"
    other = phy.build_data_frame(nwk_skey=NWK, app_skey=APP, dev_addr=0x01020304, fcnt32=1, fport=1, payload=b"x")
    with pytest.raises(LoRaWANDecodeError) as info:
        concentrator.open_data_frame(other, store)
    assert info.value.cause == "unknown_devaddr"


def test_store_survives_restart(tmp_path: Path) -> None:
    store = _store(tmp_path)
    concentrator.open_data_frame(_frame(41), store)
    store.flush()
    again = SessionStore(tmp_path / "sessions.json")
    again.load()
    assert again.by_eui["0000000000000001"].fcnt_up == 41
    with pytest.raises(LoRaWANDecodeError):
        concentrator.open_data_frame(_frame(41), again)
    (tmp_path / "sessions.json").write_text("{broken")
    damaged = SessionStore(tmp_path / "sessions.json")
    damaged.load()
    assert damaged.by_eui == {} and (tmp_path / "sessions.corrupt").exists()


def test_join_accept_and_nonce_reuse(tmp_path: Path) -> None:
    app_key = bytes(range(16))
    devices = {"70b3d57ed0000002": concentrator.OtaaDevice("70b3d57ed0000002", app_key, None)}
    store = SessionStore(tmp_path / "s.json")
    request = phy.build_join_request(app_key, 0x1122, 0x70B3D57ED0000002, 0x0203)
    accept, session = concentrator.accept_join(request, devices, store, net_id=0x000013,
                                               random_bytes=lambda n: bytes(range(1, n + 1)))
    decoded = phy.decrypt_join_accept(app_key, accept)
    assert decoded.dev_addr == session.dev_addr and decoded.dev_addr >> 25 == 0x13
    nwk, app = phy.derive_session_keys(app_key, decoded.app_nonce, decoded.net_id, 0x0203)
    assert (nwk.hex(), app.hex()) == (session.nwk_skey, session.app_skey)
    with pytest.raises(LoRaWANDecodeError) as info:
        concentrator.accept_join(request, devices, store, net_id=0x13, random_bytes=bytes)
    assert info.value.cause == "join_nonce_reused"
    stranger = phy.build_join_request(app_key, 0, 0x99, 1)
    with pytest.raises(LoRaWANDecodeError) as info:
        concentrator.accept_join(stranger, devices, store, net_id=0x13, random_bytes=bytes)
    assert info.value.cause == "unknown_deveui"
    forged = phy.build_join_request(bytes(16), 0, 0x70B3D57ED0000002, 9)
    with pytest.raises(LoRaWANDecodeError) as info:
        concentrator.accept_join(forged, devices, store, net_id=0x13, random_bytes=bytes)
    assert info.value.cause == "bad_mic"


def test_join_txpk_timing() -> None:
    uplink = RxPk(data="", tmst=0xFFFFFFF0, freq=867.5, datr="SF9BW125")
    txpk = concentrator.join_txpk(uplink, b"\x20" * 17, delay_us=5_000_000, power=14)
    assert txpk.tmst == (0xFFFFFFF0 + 5_000_000) & 0xFFFFFFFF and txpk.freq == 867.5 and txpk.ipol
    assert txpk.datr == "SF9BW125" and txpk.size == 17


def test_deduplicator_keeps_best_link() -> None:
    dedup = concentrator.Deduplicator(window=0.2, memory=5.0)

    def heard(rssi: float, snr: float, gw: int, t: float) -> concentrator.Heard:
        return concentrator.Heard(rxpk=RxPk(data="", rssi=rssi, lsnr=snr), gateway_eui=gw, received=t, event_ts=t)

    assert dedup.offer(b"A", heard(-90, 9.0, 1, 0.0))
    assert not dedup.offer(b"A", heard(-70, 2.0, 2, 0.05))
    assert not dedup.offer(b"A", heard(-95, -1.0, 3, 0.1))
    best = dedup.take(b"A", 0.2)
    assert best is not None and (best.copies, best.rssi, best.snr, best.gateway_eui) == (3, -70, 9.0, 2)
    assert not dedup.offer(b"A", heard(-60, 1.0, 4, 1.0))  # late copy: still a duplicate
    assert dedup.offer(b"A", heard(-60, 1.0, 4, 9.0))  # beyond memory: a new frame (replay check decides)


@given(st.binary(max_size=40))
def test_arbitrary_frames_raise_only_decode_error(raw: bytes) -> None:
    store = SessionStore(Path("/nonexistent/never-written.json"))
    store.put(Session(dev_eui="01", dev_addr=int.from_bytes(raw[1:5].ljust(4, b"\0"), "little"),
                      nwk_skey=NWK.hex(), app_skey=APP.hex(), activation="abp"))
    for call in (lambda: concentrator.open_data_frame(raw, store),
                 lambda: concentrator.accept_join(raw, {}, store, net_id=0, random_bytes=bytes)):
        try:
            call()
        except LoRaWANDecodeError:
            pass


def test_deduplicator_with_10000_recent_frames_counts_duplicates_exactly_and_forgets() -> None:
    # issue 17: above 4,096 remembered frames every settle rebuilt the whole memory (quadratic).
    dedup = concentrator.Deduplicator(window=0.2, memory=30.0)
    frames = [i.to_bytes(4, "big") * 4 for i in range(10_000)]

    def heard(t: float) -> concentrator.Heard:
        return concentrator.Heard(rxpk=RxPk(data="", rssi=-80.0, lsnr=5.0), gateway_eui=1, received=t, event_ts=t)

    for i, raw in enumerate(frames):
        t = i * 0.001  # 10,000 frames in 10 s, all within memory
        assert dedup.offer(raw, heard(t))
        assert dedup.take(raw, t + 0.2) is not None
    assert dedup.remembered == 10_000
    late = sum(not dedup.offer(raw, heard(11.0)) for raw in frames)  # every late copy is a duplicate
    assert late == 10_000
    assert dedup.pending == {}
    dedup.take(b"x", 25.0)  # nothing expired yet: the first frame settled at 0.2 s
    assert dedup.remembered == 10_000
    dedup.take(b"x", 35.0)  # memory 30 s: frames settled before 5.0 s are forgotten
    assert dedup.remembered == 10_000 - 4_800
    assert dedup.offer(frames[0], heard(35.0))  # forgotten: a new frame (the counter check decides)
    assert not dedup.offer(frames[-1], heard(35.0))


def test_deduplicator_memory_is_bounded_by_count() -> None:
    dedup = concentrator.Deduplicator(window=0.2, memory=30.0, max_recent=1000)
    for i in range(5000):
        raw = i.to_bytes(4, "big")
        dedup.offer(raw, concentrator.Heard(rxpk=RxPk(data=""), gateway_eui=1, received=0.0, event_ts=0.0))
        dedup.take(raw, 0.2)
    assert dedup.remembered == 1000
    assert not dedup.offer((4999).to_bytes(4, "big"), concentrator.Heard(rxpk=RxPk(data=""), gateway_eui=1,
                                                                         received=1.0, event_ts=1.0))


def test_sessions_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    store = _store(tmp_path)
    stale = tmp_path / "sessions.tmp"
    stale.write_bytes(b"left by a killed run")
    stale.chmod(0o644)
    old = os.umask(0o022)
    try:
        store.flush()
        first = stat.S_IMODE(store.path.stat().st_mode)
        store.touch()
        store.flush()
        second = stat.S_IMODE(store.path.stat().st_mode)
    finally:
        os.umask(old)
    assert (first, second) == (0o600, 0o600)
    assert store.writes == 2


def test_frames_rewrite_only_the_small_counters_file(tmp_path: Path) -> None:
    """A join rewrites the sessions (keys, DevNonces); frames rewrite only {DevEUI: FCnt}."""
    store = _store(tmp_path)
    store.flush()
    sessions_before = store.path.read_bytes()
    concentrator.open_data_frame(_frame(41), store)
    files = store.snapshot()
    assert [path for path, _ in files] == [store.counters_path]
    assert files[0][1] == b'{"0000000000000001":41}'
    store.write(files)
    assert store.path.read_bytes() == sessions_before
    again = SessionStore(tmp_path / "sessions.json")
    again.load()
    assert again.by_eui["0000000000000001"].fcnt_up == 41
    store.counters_path.write_text("{broken")
    damaged = SessionStore(tmp_path / "sessions.json")
    damaged.load()  # the sessions' own counters stand
    assert damaged.by_eui["0000000000000001"].fcnt_up == -1
    assert store.counters_path.with_suffix(".corrupt").exists()


def test_a_cut_between_the_two_writes_after_a_rejoin_never_gives_the_new_session_the_old_counter(
        tmp_path: Path) -> None:
    """The two documents are written one after the other: whichever one a power cut (or a full
    disk) leaves unwritten, no session comes back with another session's counter (the old
    counter on a fresh session refused every frame of the device as a replay for months)."""
    store = _store(tmp_path)
    concentrator.open_data_frame(_frame(50_000), store)
    store.flush()
    rejoined = Session(dev_eui="0000000000000001", dev_addr=ADDR + 1, nwk_skey=NWK.hex(), app_skey=APP.hex(),
                       activation="otaa")
    store.put(rejoined)
    files = store.snapshot()
    assert [path for path, _ in files] == [store.counters_path, store.path]
    store.write(files[:1])  # the cut: only the first document reaches the card
    again = SessionStore(tmp_path / "sessions.json")
    again.load()
    loaded = again.by_eui["0000000000000001"]
    # the old session (before the join) with its own counter: the device's next join replaces it
    assert (loaded.dev_addr, loaded.fcnt_up) == (ADDR, 50_000)
    store.write(files[1:])  # the rest after all
    again = SessionStore(tmp_path / "sessions.json")
    again.load()
    assert (again.by_eui["0000000000000001"].dev_addr, again.by_eui["0000000000000001"].fcnt_up) == (ADDR + 1, -1)


def test_a_driver_restart_keeps_the_sessions_in_memory_over_an_older_file(tmp_path: Path) -> None:
    """The supervisor restarts `run` on the same driver: sessions are read from the file only the
    first time, so a join whose write the disk refused is not replaced by the older file."""
    config = make_config(mode="concentrator", listen="127.0.0.1:0", devices=[
        {"dev_eui": "0000000000000001", "activation": "otaa", "app_key": NWK.hex(), "join_eui": "0000000000000000"}])
    ctx = DriverContext("lora", gateway_id="gw", state_dir=tmp_path / "state", submit=lambda r: None,
                        submit_event=lambda e: None)
    driver = LoRaWANDriver(config, ctx)
    driver._load_sessions()  # first run
    driver.store.put(Session(dev_eui="0000000000000001", dev_addr=ADDR, nwk_skey=NWK.hex(), app_skey=APP.hex(),
                             activation="otaa"))
    driver.store.flush()
    joined_again = Session(dev_eui="0000000000000001", dev_addr=ADDR + 7, nwk_skey=APP.hex(), app_skey=NWK.hex(),
                           activation="otaa")
    driver.store.put(joined_again)  # a rejoin whose write failed: only in memory
    driver._load_sessions()  # the restarted run
    assert driver.store.by_eui["0000000000000001"] == joined_again
    assert driver.store.by_addr.get(ADDR + 7) == [joined_again] and ADDR not in driver.store.by_addr
