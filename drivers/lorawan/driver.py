"""The `lorawan` driver: joins the transports to the pure LoRaWAN code."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
from typing import TYPE_CHECKING, Any

from drivers.lorawan import Config, concentrator, phy, semtech_udp
from drivers.lorawan.decode import Decoded, decode_ns, decode_payload
from drivers.lorawan.errors import LoRaWANDecodeError
from drivers.lorawan.network_server import parse_iso_time, parse_uplink
from drivers.lorawan.sessions import Session, SessionStore
from drivers.lorawan.transport import UdpEndpoint, open_udp
from gateway.driver import Driver, DriverContext
from gateway.model import admit_forwarded

if TYPE_CHECKING:
    from gateway.mqtt.subscriber import MqttSubscriber

__all__ = ["LoRaWANDriver"]


def _split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class LoRaWANDriver(Driver[Config]):
    type_name = "lorawan"

    def __init__(self, config: Config, ctx: DriverContext) -> None:
        super().__init__(config, ctx)
        self.codecs = {d.dev_eui.lower(): config.codec_for(d.dev_eui.lower()) for d in config.devices}
        self.split_channels = {d.dev_eui.lower() for d in config.devices if config.split_channels_for(d.dev_eui.lower())}
        self.store = SessionStore(ctx.state_dir / "lorawan-sessions.json")
        self.dedup = concentrator.Deduplicator(config.dedup_window)
        self.otaa = {
            d.dev_eui.lower(): concentrator.OtaaDevice(
                d.dev_eui.lower(), bytes.fromhex(d.app_key), int(d.join_eui, 16) if d.join_eui else None
            )
            for d in config.devices
            if d.activation == "otaa"
        }
        self.net_id = int(config.net_id, 16)
        self.udp: UdpEndpoint | None = None
        self.mqtt: MqttSubscriber | None = None
        self.pull_addr: dict[int, tuple[Any, ...]] = {}  # gateway EUI -> PULL_DATA source address
        self._flush_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()  # join writes in flight
        self._sessions_loaded = False
        self.bound_port = 0

    # --- common --------------------------------------------------------------------------------

    def _codec(self, dev_eui: str) -> str:
        return self.codecs.get(dev_eui, self.config.default_codec)

    def _fail(self, error: LoRaWANDecodeError) -> None:
        self.ctx.decode_error(error)

    def _deliver(self, decoded: Decoded) -> None:
        """Emit a frame's readings and count what it could not turn into readings; measurements
        outside the catalog are registered (gateway.model.admit_forwarded) and counted."""
        for problem in decoded.problems:
            self.ctx.decode_error(problem)
        self.ctx.emit_many(decoded.readings)
        for reading, unit in decoded.forwarded:
            admitted = admit_forwarded(reading, unit)
            if isinstance(admitted, str):
                self.ctx.decode_error(admitted, reading.metric, device=reading.device)
                continue
            self.ctx.count("unknown_metric_forwarded")
            self.ctx.emit(admitted)

    async def run(self) -> None:
        if self.config.mode == "concentrator":
            await self._run_concentrator()
        else:
            await self._run_network_server()

    async def close(self) -> None:
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task
            self._flush_task = None
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()
            self.udp = None
        if self.mqtt is not None:
            await self.mqtt.stop()
            self.mqtt = None
        await self._persist()

    async def _persist(self) -> None:
        """Write the sessions and counters if they changed. A disk that refuses the write (full,
        read-only) is logged once per cause and counted; the state stays dirty and is written
        at the next flush, and the driver goes on: it must never die of the SD card."""
        if not self.store.dirty:
            return
        files = self.store.snapshot()
        try:
            await asyncio.to_thread(self.store.write, files)
        except OSError as error:
            self.store.unwritten(files)
            self.ctx.state_write_failed(self.store.path, error,
                                        "sessions kept in memory and written again at the next flush")

    # --- network-server mode -------------------------------------------------------------------

    async def _run_network_server(self) -> None:
        # gmqtt loads only in network-server mode
        from gateway.mqtt.subscriber import MqttSubscriber, SubscriberSettings

        config = self.config
        settings = SubscriberSettings(
            host=config.mqtt_host,
            port=config.mqtt_port,
            topics=config.mqtt_topics,
            qos=config.mqtt_qos,
            client_id=config.mqtt_client_id_for(self.ctx.gateway_id, self.ctx.name),
            username=config.mqtt_username,
            password=config.mqtt_password,
            keepalive=config.mqtt_keepalive,
            protocol=config.mqtt_protocol,
            clean_session=config.mqtt_clean_session,
            session_expiry=config.mqtt_session_expiry,
            tls=config.mqtt_tls,
            ca_file=config.mqtt_ca_file,
            cert_file=config.mqtt_cert_file,
            key_file=config.mqtt_key_file,
            tls_insecure=config.mqtt_tls_insecure,
            tls_keys=("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"),
        )
        self.mqtt = MqttSubscriber(settings, self._on_ns_message)
        try:
            await self.mqtt.start()
            await self.mqtt.wait_failed()
        finally:
            await self.close()

    def _on_ns_message(self, topic: str, body: bytes) -> None:
        received = self.ctx.clock()
        try:
            uplink = parse_uplink(body, received, self.config.format)
            decoded = decode_ns(
                uplink,
                self._codec(uplink.dev_eui),
                self.config.use_network_decoded,
                split_channels=uplink.dev_eui in self.split_channels,
            )
        except LoRaWANDecodeError as error:
            self._fail(error)
            return
        except Exception as error:  # noqa: BLE001 - field data must never stop the subscriber
            self._fail(LoRaWANDecodeError("internal_error", f"{type(error).__name__}: {error}"))
            return
        self.ctx.count(f"uplinks_{uplink.source}")
        self._deliver(decoded)

    # --- concentrator mode ---------------------------------------------------------------------

    def _load_sessions(self) -> None:
        self.ctx.state_dir.mkdir(parents=True, exist_ok=True)
        if not self._sessions_loaded:
            # Once per driver instance: the supervisor restarts `run` on the same instance, and
            # by then the store in memory is at least as new as the file (a join whose write the
            # disk refused lives only there); reading the file again would put older sessions back.
            self.store.load()
            self._sessions_loaded = True
        for device in self.config.devices:
            if device.activation != "abp":
                continue
            eui = device.dev_eui.lower()
            wanted = Session(
                dev_eui=eui,
                dev_addr=int(device.dev_addr, 16),
                nwk_skey=device.nwk_skey.lower(),
                app_skey=device.app_skey.lower(),
                activation="abp",
            )
            stored = self.store.by_eui.get(eui)
            if stored is not None and (stored.dev_addr, stored.nwk_skey, stored.app_skey) == (
                wanted.dev_addr,
                wanted.nwk_skey,
                wanted.app_skey,
            ):
                continue  # same session: keep its frame counter
            self.store.put(wanted)

    async def _run_concentrator(self) -> None:
        await asyncio.to_thread(self._load_sessions)
        host, port = _split_host_port(self.config.listen)
        self.udp = await open_udp(host, port, self._on_datagram)
        assert self.udp.transport is not None
        self.bound_port = self.udp.transport.get_extra_info("sockname")[1]
        self._flush_task = asyncio.create_task(self._flush_periodically())
        try:
            await self.udp.closed
        finally:
            await self.close()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.state_flush_interval)
            await self._persist()

    def _on_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self._handle_datagram(data, addr)
        except Exception as error:  # noqa: BLE001 - field data must never stop the listener
            self._fail(LoRaWANDecodeError("internal_error", f"{type(error).__name__}: {error}"))

    def _handle_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        received = self.ctx.clock()
        try:
            datagram = semtech_udp.parse_datagram(data)
        except LoRaWANDecodeError as error:
            self._fail(error)
            return
        ident = datagram.ident
        assert self.udp is not None
        if ident == semtech_udp.Ident.PUSH_DATA:
            self.udp.send(semtech_udp.build_push_ack(datagram.token), addr)
            assert datagram.gateway_eui is not None
            for rxpk in datagram.rxpk:
                self._on_rxpk(rxpk, datagram.gateway_eui, received)
        elif ident == semtech_udp.Ident.PULL_DATA:
            assert datagram.gateway_eui is not None
            self.pull_addr[datagram.gateway_eui] = addr
            self.udp.send(semtech_udp.build_pull_ack(datagram.token), addr)
        elif ident == semtech_udp.Ident.TX_ACK:
            ok = datagram.tx_error in (None, "NONE")
            self.ctx.count("tx_ack" if ok else "tx_ack_error")
        else:
            self.ctx.count("udp_unexpected")

    def _event_time(self, rxpk: semtech_udp.RxPk, received: float) -> float:
        gateway_time = parse_iso_time(rxpk.time)
        if gateway_time is not None and abs(gateway_time - received) <= self.config.max_clock_skew:
            return gateway_time
        return received

    def _on_rxpk(self, rxpk: semtech_udp.RxPk, gateway_eui: int, received: float) -> None:
        self.ctx.count("rxpk")
        if rxpk.stat == -1:
            self.ctx.count("crc_error")
            return
        try:
            raw = base64.b64decode(rxpk.data, validate=True)
        except (binascii.Error, ValueError):
            self._fail(LoRaWANDecodeError("bad_base64", "rxpk data"))
            return
        if len(raw) < 12:  # shorter than any data frame or join request
            self._fail(LoRaWANDecodeError("truncated", f"{len(raw)}-byte PHYPayload"))
            return
        if len(raw) > phy.MAX_PHY_PAYLOAD:  # not LoRaWAN; refused before dedup holds it
            self._fail(LoRaWANDecodeError("too_long", f"{len(raw)}-byte PHYPayload"))
            return
        heard = concentrator.Heard(
            rxpk=rxpk, gateway_eui=gateway_eui, received=received, event_ts=self._event_time(rxpk, received)
        )
        if self.dedup.offer(raw, heard):
            loop = asyncio.get_running_loop()
            if self.config.dedup_window > 0:
                loop.call_later(self.config.dedup_window, self._settle, raw)
            else:
                loop.call_soon(self._settle, raw)
        else:
            self.ctx.count("duplicates")

    def _settle(self, raw: bytes) -> None:
        heard = self.dedup.take(raw, self.ctx.clock())
        if heard is None:
            return
        try:
            if raw[0] >> 5 == 0:
                self._join(raw, heard)
            else:
                self._uplink(raw, heard)
        except LoRaWANDecodeError as error:
            self._fail(error)
        except Exception as error:  # noqa: BLE001 - one bad frame must not stop the others
            self._fail(LoRaWANDecodeError("internal_error", f"{type(error).__name__}: {error}"))

    def _uplink(self, raw: bytes, heard: concentrator.Heard) -> None:
        uplink = concentrator.open_data_frame(raw, self.store)
        self.ctx.count("uplinks")
        decoded = decode_payload(
            uplink.dev_eui,
            self._codec(uplink.dev_eui),
            uplink.payload,
            uplink.fport,
            heard.event_ts,
            heard.rssi,
            heard.snr,
            split_channels=uplink.dev_eui in self.split_channels,
        )
        self._deliver(decoded)

    def _join(self, raw: bytes, heard: concentrator.Heard) -> None:
        accept, session = concentrator.accept_join(
            raw, self.otaa, self.store, net_id=self.net_id, random_bytes=os.urandom, rx1_delay=self.config.rx1_delay
        )
        self.ctx.count("joins")
        # A join is rare and its keys are needed after a restart: persist it now, off the loop.
        task = asyncio.get_running_loop().create_task(self._persist())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        addr = self.pull_addr.get(heard.gateway_eui)
        if addr is None or self.udp is None:
            self.ctx.count("join_no_downlink_path")
            return
        txpk = concentrator.join_txpk(
            heard.rxpk, accept, delay_us=round(self.config.join_accept_delay * 1e6), power=self.config.tx_power
        )
        token = int.from_bytes(os.urandom(2), "big")
        self.udp.send(semtech_udp.build_pull_resp(token, txpk), addr)
        self.ctx.count("join_accepts_sent")
