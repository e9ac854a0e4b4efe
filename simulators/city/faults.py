"""Faults on the scenario's timetable, each an object that applies itself to the running city and
undoes itself when its duration ends (one-shot faults have nothing to undo).

A scenario's fault tables (simulators.city.scenario) are typed settings; `injection_for` pairs
each with the class that knows how to inject it, from the `INJECTIONS` table: a new fault kind
is a settings struct plus one class here.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from simulators.city.scenario import (
    BleStall,
    BrokerRestart,
    ChargePointDisconnect,
    ClockJump,
    Corruption,
    DiskFull,
    Fault,
    GatewayKill,
    GatewayTerm,
    SerialUnplug,
    UplinkOutage,
)

if TYPE_CHECKING:
    from simulators.city.runner import CityRun

__all__ = ["INJECTIONS", "FaultUnavailable", "Injection", "injection_for"]


class FaultUnavailable(RuntimeError):
    """This machine cannot inject the fault (e.g. no permission to mount a tmpfs)."""


class Injection:
    """One fault of the scenario. `prepare` sets up what it needs before the gateway starts;
    `begin` applies it and says what happened; `end` undoes it (called when `duration` has
    passed, or when the devices stop first); `cleanup` undoes `prepare` after the run."""

    kind: ClassVar[str] = ""
    # the runner keeps the devices' books over time (what a SIGKILL may catch unstored)
    needs_send_history: ClassVar[bool] = False

    def __init__(self, fault: Any) -> None:
        self.fault = fault

    async def prepare(self, run: CityRun) -> None:
        return None

    async def cleanup(self, run: CityRun) -> None:
        return None

    @property
    def duration(self) -> float | None:
        """Seconds until `end`; None for a one-shot fault."""
        return None

    async def begin(self, run: CityRun) -> str:
        raise NotImplementedError

    async def end(self, run: CityRun) -> None:
        return None


class UplinkOutageInjection(Injection):
    """mqtt: the platform's broker stops; file: the output folder becomes a file."""

    kind = "uplink_outage"
    fault: UplinkOutage

    @property
    def duration(self) -> float | None:
        return self.fault.duration

    async def begin(self, run: CityRun) -> str:
        f = self.fault
        if run.platform is not None:
            await asyncio.to_thread(run.platform.outage_begin)
            return f"platform broker stopped at {f.at:g} s for {f.duration:g} s"
        hidden = run.batches_dir.with_name("batches.outage")
        run.batches_dir.rename(hidden)
        run.batches_dir.write_text("the output folder is gone (simulated outage)\n")
        return f"file uplink folder unwritable at {f.at:g} s for {f.duration:g} s"

    async def end(self, run: CityRun) -> None:
        if run.platform is not None:
            await asyncio.to_thread(run.platform.outage_end)  # blocks until mosquitto listens
            return
        run.batches_dir.unlink()
        run.batches_dir.with_name("batches.outage").rename(run.batches_dir)


class CorruptionInjection(Injection):
    kind = "corrupt"
    fault: Corruption

    @property
    def duration(self) -> float | None:
        return self.fault.duration

    async def begin(self, run: CityRun) -> str:
        f = self.fault
        if f.target in ("lorawan", "all"):
            run.lora.corrupt_rate = f.rate
        if f.target in ("serial", "all"):
            run.serial.set_corruption(f.rate)
        return f"{f.rate:.0%} of {f.target} frames corrupted from {f.at:g} s for {f.duration:g} s"

    async def end(self, run: CityRun) -> None:
        run.lora.corrupt_rate = 0.0
        run.serial.set_corruption(0.0)


class SerialUnplugInjection(Injection):
    kind = "serial_unplug"
    fault: SerialUnplug

    def __init__(self, fault: Any) -> None:
        super().__init__(fault)
        self.pulled: list[Any] = []

    @property
    def duration(self) -> float | None:
        return self.fault.duration

    async def begin(self, run: CityRun) -> str:
        f = self.fault
        self.pulled = run.serial.unplug(f.ports)
        return f"{len(self.pulled)} serial port(s) unplugged at {f.at:g} s for {f.duration:g} s"

    async def end(self, run: CityRun) -> None:
        assert run.process is not None
        run.serial.replug(self.pulled, run.process.pid)


class BleStallInjection(Injection):
    kind = "ble_stall"
    fault: BleStall

    async def begin(self, run: CityRun) -> str:
        run.ble.stall(self.fault.mode)
        return f"BLE scanner stalled ({self.fault.mode}) at {self.fault.at:g} s"


class ChargePointDisconnectInjection(Injection):
    kind = "cp_disconnect"
    fault: ChargePointDisconnect

    async def begin(self, run: CityRun) -> str:
        run.ocpp.disconnect(self.fault.count)
        return f"{self.fault.count} charge points dropped at {self.fault.at:g} s"


class ClockJumpInjection(Injection):
    """The gateway runs under simulators.city.gwproc: its clock offset is re-read on SIGUSR1."""

    kind = "clock_jump"
    fault: ClockJump

    async def begin(self, run: CityRun) -> str:
        run.offset += self.fault.seconds
        (run.options.workdir / "clock-offset").write_text(f"{run.offset}\n")
        if run.process is not None:
            run.process.send_signal(signal.SIGUSR1)
        return f"gateway clock stepped {self.fault.seconds:+g} s at {self.fault.at:g} s"


class DiskFullInjection(Injection):
    """The state folder is a tmpfs of its own (mounted before the gateway starts); a filler file
    takes every free byte for `duration` seconds. The outbox, the file uplink's output and the
    open-window checkpoints all live there: the gateway must stay up, hold what it cannot
    store, and write it when the filler is deleted."""

    kind = "disk_full"
    fault: DiskFull

    def __init__(self, fault: Any) -> None:
        super().__init__(fault)
        self.mounted: Path | None = None
        self.filled = 0

    @property
    def duration(self) -> float | None:
        return self.fault.duration

    async def prepare(self, run: CityRun) -> None:
        target = run.state_dir
        target.mkdir(parents=True, exist_ok=True)
        done = await asyncio.to_thread(
            subprocess.run, ["mount", "-t", "tmpfs", "-o", f"size={self.fault.size_mib}m,mode=0755", "tmpfs", str(target)],
            capture_output=True, text=True)
        if done.returncode != 0:
            raise FaultUnavailable(f"disk_full needs a tmpfs on the state folder: mount said "
                                   f"{(done.stderr or done.stdout).strip() or done.returncode} (run as root)")
        self.mounted = target

    async def begin(self, run: CityRun) -> str:
        self.filled = await asyncio.to_thread(_fill, run.state_dir / "filler")
        return f"state folder full ({self.filled / 2**20:.1f} MiB filler) at {self.fault.at:g} s for {self.fault.duration:g} s"

    async def end(self, run: CityRun) -> None:
        (run.state_dir / "filler").unlink(missing_ok=True)

    async def cleanup(self, run: CityRun) -> None:
        if self.mounted is not None:
            await asyncio.to_thread(subprocess.run, ["umount", str(self.mounted)], capture_output=True)
            self.mounted = None


def _fill(path: Path) -> int:
    """Write zeros to `path` until the file system refuses (ENOSPC); returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12, 1 << 9):
            block = bytes(chunk)
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


class GatewayKillInjection(Injection):
    """SIGKILL, and the runner starts the gateway again `down` seconds later."""

    kind = "gateway_kill"
    fault: GatewayKill
    needs_send_history = True
    how = signal.SIGKILL

    @property
    def duration(self) -> float | None:
        return self.fault.down

    async def begin(self, run: CityRun) -> str:
        took = await run.stop_gateway_midrun(self.how)
        return f"gateway {self.how.name} at {self.fault.at:g} s (exited in {took:.1f} s), started again after {self.fault.down:g} s"

    async def end(self, run: CityRun) -> None:
        await run.start_gateway_again()


class GatewayTermInjection(GatewayKillInjection):
    """SIGTERM under load (a clean stop), and a start again `down` seconds after it exited."""

    kind = "gateway_term"
    fault: GatewayTerm  # type: ignore[assignment]
    needs_send_history = False
    how = signal.SIGTERM


class BrokerRestartInjection(Injection):
    """The platform's broker (run without persistence) stops and comes back empty. The
    platform's consumer comes back only after the gateway has published into the empty broker
    (its `platform_ack_timeouts` counter rose): what the broker acknowledged then reached no
    subscriber, the race that loses batches with `ack = "broker"` happens on every run."""

    kind = "broker_restart"
    fault: BrokerRestart
    timeouts_before = 0.0

    @property
    def duration(self) -> float | None:
        return self.fault.down

    async def begin(self, run: CityRun) -> str:
        assert run.platform is not None and not run.platform.persistent and run.receiver is not None
        self.timeouts_before = await asyncio.to_thread(_ack_timeouts, run.metrics_url)
        await run.receiver.stop()
        await asyncio.to_thread(run.platform.outage_begin)
        return f"platform broker (no persistence) stopped at {self.fault.at:g} s, back empty after {self.fault.down:g} s"

    async def end(self, run: CityRun) -> None:
        assert run.platform is not None and run.receiver is not None
        await asyncio.to_thread(run.platform.outage_end)
        deadline = asyncio.get_running_loop().time() + 20.0
        timeouts = self.timeouts_before
        while asyncio.get_running_loop().time() < deadline and timeouts <= self.timeouts_before:
            await asyncio.sleep(0.2)  # poll step: the gateway publishes into the empty broker
            timeouts = await asyncio.to_thread(_ack_timeouts, run.metrics_url)
        run.receiver.subscribed.clear()
        await run.receiver.start()
        for done in run.faults_done:
            if done["kind"] == self.kind:
                done["what"] += (f"; {timeouts - self.timeouts_before:g} batch(es) published into the empty broker "
                                 "before the platform's consumer was back, not acknowledged by the platform, sent again")


def _ack_timeouts(metrics_url: str) -> float:
    """The MQTT uplink's platform_ack_timeouts counter (0 when /metrics does not answer)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("edge_gateway_uplink_events_total{") and 'counter="platform_ack_timeouts"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


INJECTIONS: dict[type, type[Injection]] = {
    UplinkOutage: UplinkOutageInjection,
    Corruption: CorruptionInjection,
    SerialUnplug: SerialUnplugInjection,
    BleStall: BleStallInjection,
    ChargePointDisconnect: ChargePointDisconnectInjection,
    ClockJump: ClockJumpInjection,
    DiskFull: DiskFullInjection,
    GatewayKill: GatewayKillInjection,
    GatewayTerm: GatewayTermInjection,
    BrokerRestart: BrokerRestartInjection,
}


def injection_for(fault: Fault) -> Injection:
    return INJECTIONS[type(fault)](fault)
