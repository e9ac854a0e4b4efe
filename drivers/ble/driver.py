"""The BLE driver: bleak advertisements -> pipeline (decode, replay, dedup) -> readings, plus
the stalled-scanner watchdog.

On Raspberry Pi class hardware BlueZ scanning is known to stop delivering advertisements
silently after hours. The watchdog measures silence (no advertisement of any device) while tags
are expected; after `stall_timeout` it restarts the scanner, and after
`restarts_before_power_cycle` restarts that did not help it power-cycles the adapter through
BlueZ, then starts over. Every step is logged and counted; none is fatal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import ClassVar

from drivers.ble import Config
from drivers.ble.dedup import Deduplicator, ReplayGuard
from drivers.ble.errors import BleDecodeError
from drivers.ble.pipeline import AdvertisementPipeline
from drivers.ble.transport import AdapterControl, Scanner
from gateway.driver import Driver, DriverContext
from gateway.errors import DriverError

__all__ = ["BleDriver"]

_STATE_SAVE_INTERVAL = 30.0  # seconds between saves of the replay counters and last measurements


class BleDriver(Driver[Config]):
    type_name: ClassVar[str] = "ble"

    def __init__(self, config: Config, ctx: DriverContext) -> None:
        super().__init__(config, ctx)
        self.pipeline = AdvertisementPipeline(
            allow=frozenset(config.allow),
            bthome_keys={mac: bytes.fromhex(key) for mac, key in config.bthome_keys.items()},
            replay_guard=ReplayGuard(ctx.state_dir),
            dedup=Deduplicator(ctx.state_dir),
            emit_rssi=config.emit_rssi,
            count=ctx.count,
        )
        self.scanner = Scanner(
            self._on_advertisement,
            adapter=config.adapter,
            scanning_mode=config.scanning_mode,
            # InProgress clears within a second on real adapters; longer trouble is the
            # watchdog's business, so the retries stay short against the stall timeout.
            start_retries=3,
            retry_delay=min(0.5, config.stall_timeout / 8),
            on_transient=self._on_transient,
        )
        self.adapter = AdapterControl(config.adapter)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_activity = 0.0  # loop time of the last advertisement or recovery step
        self._recovery_step = 0  # recovery steps taken since the last advertisement
        self._tag_seen = False

    # -- advertisements (called by bleak on the event loop thread) ---------------------------

    def _on_advertisement(
        self, mac: str, manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes], rssi: int | None
    ) -> None:
        if self._loop is not None:
            self._last_activity = self._loop.time()
        if self._recovery_step:
            self.ctx.count("recoveries")
            self.ctx.log.info("advertisements_resumed", after_steps=self._recovery_step,
                              note="BLE advertisements flowing again")
            self._recovery_step = 0
        ctx = self.ctx
        try:
            outcome, readings = self.pipeline.process(mac, manufacturer_data, service_data, rssi, ctx.clock())
        except BleDecodeError as error:
            ctx.decode_error(error)
            return
        if outcome:
            ctx.count(outcome)
            return
        self._tag_seen = True
        ctx.emit_many(readings)

    def _on_transient(self, reason: str) -> None:
        self.ctx.count("bluez_transient_errors")
        self.ctx.log.info("bluez_transient_error", reason=reason, note="retrying")

    # -- watchdog -----------------------------------------------------------------------------

    def _tags_expected(self) -> bool:
        return self.config.expect_tags or bool(self.config.allow) or self._tag_seen

    async def _recover(self) -> None:
        restarts = self.config.restarts_before_power_cycle
        step = self._recovery_step % (restarts + 1)
        self._recovery_step += 1
        log = self.ctx.log
        try:
            await self.scanner.stop()
            if step < restarts:
                self.ctx.count("scanner_restarts")
                log.warning("scanner_restarting", note="no BLE advertisement within the stall timeout",
                            stall_timeout=self.config.stall_timeout, step=self._recovery_step)
            else:
                self.ctx.count("adapter_power_cycles")
                log.warning("adapter_power_cycling", note="scanner restart did not help",
                            adapter=self.config.adapter or "default", step=self._recovery_step)
                await self.adapter.power_cycle(self.config.power_off_seconds)
            await self.scanner.start()
        except DriverError as error:
            self.ctx.count("recovery_failures")
            log.warning("recovery_step_failed", error=str(error), note="next step after the stall timeout")

    async def run(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.ctx.state_dir.mkdir(parents=True, exist_ok=True)
        self.pipeline.dedup.forget_saved()  # a supervisor restart's stop wrote it: stale from now on
        await self.scanner.start()
        self._last_activity = loop.time()
        last_save = loop.time()
        timeout = self.config.stall_timeout
        check_every = min(max(timeout / 5, 0.05), 5.0)
        try:
            while True:
                await asyncio.sleep(check_every)  # watchdog tick
                now = loop.time()
                if now - last_save >= _STATE_SAVE_INTERVAL:
                    self._save_counters()
                    last_save = now
                if not self._tags_expected() or now - self._last_activity < timeout:
                    continue
                await self._recover()
                self._last_activity = loop.time()
        finally:
            await self.scanner.stop()
            self._save_counters(stopping=True)

    async def close(self) -> None:
        await self.scanner.stop()
        self._save_counters(stopping=True)

    def _save_counters(self, *, stopping: bool = False) -> None:
        """Persist the BTHome replay counters, and when stopping the last measurement of each
        tag (it changes with every measurement: writing it every 30 s would cost the SD card
        far more than it saves; after a crash the readings since the last checkpoint are lost
        anyway). A disk that refuses the write (full, read-only) is counted and logged once;
        the state stays dirty and is written next time: the driver never dies of the SD card."""
        try:
            self.pipeline.replay.save()
        except OSError as error:
            self.ctx.state_write_failed(self.pipeline.replay.path, error,
                                        "replay counters kept in memory, written again later")
        if not stopping:
            return
        try:
            self.pipeline.dedup.save()
        except OSError as error:
            self.ctx.state_write_failed(self.pipeline.dedup.path, error,
                                        "last measurements kept in memory, written again later")

