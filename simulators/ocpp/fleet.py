"""Simulated OCPP charge points: real OCPP-J clients over WebSocket (1.6 or 2.0.1).

Each charge point runs realistic connector sessions on a *virtual* clock (every tick advances it
by `time_step` seconds), so a test knows the exact event times it will see: Available ->
Preparing -> Charging (a power curve that tapers with the state of charge, a rising energy
register) -> Finishing -> Available (1.6), or Available -> Occupied with TransactionEvents ->
Available (2.0.1), with an occasional Faulted. Everything a charge point sends is recorded
(`expected` readings in catalog units, `sent` raw frames) for loss accounting.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as Client16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as Client201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.exceptions import ConnectionClosed, InvalidHandshake

__all__ = ["Expected", "Fleet", "FleetConfig", "SimChargePoint", "iso"]

VOLTAGE = 230.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Expected:
    """A reading the gateway should produce for what was sent."""

    device: str
    metric: str
    value: float | str
    ts: float


@dataclass
class FleetConfig:
    url: str  # ws://host:port/prefix/ (the charge point id is appended)
    version: str = "1.6"  # or "2.0.1"
    charge_points: int = 1
    connectors: int = 2
    id_prefix: str = "SIM"
    # Basic-auth password per charge point id (or one for all under "*"); none: no header.
    passwords: dict[str, str] = field(default_factory=dict)
    seed: int = 1
    start_time: float = 1_767_225_600.0  # virtual clock start (2026-01-01T00:00:00Z)
    time_step: float = 10.0  # virtual seconds per tick
    tick: float = 0.0  # real seconds between ticks (0: as fast as answers come)
    max_power: float = 11_000.0  # W
    plug_probability: float = 0.3
    fault_probability: float = 0.05
    charge_ticks: int = 6
    # false: the charge point reports status and meter values only when triggered (polling).
    report: bool = True
    # kW/kWh on odd-numbered charge points (unit conversion in the gateway), W/Wh on the others.
    mixed_units: bool = True
    reconnect_delay: float = 0.2


class _Connector:
    __slots__ = ("number", "state", "ticks_left", "energy", "soc", "transaction", "seq", "pending")

    def __init__(self, number: int, energy: float) -> None:
        self.number = number
        self.state = "Available"
        self.ticks_left = 0
        self.energy = energy  # Wh register
        self.soc = 20.0
        self.transaction: int | str | None = None
        self.seq = 0
        self.pending: str | None = None  # a scheduled availability change (ChangeAvailability)


class SimChargePoint:
    """One charge point. `await start()` connects and boots; `await step()` advances one tick."""

    def __init__(self, fleet: FleetConfig, index: int) -> None:
        self.config = fleet
        self.index = index
        self.ident = f"{fleet.id_prefix}{index:04d}"
        self.rng = random.Random(fleet.seed * 100_003 + index)
        self.now = fleet.start_time
        self.kilo = fleet.mixed_units and index % 2 == 1
        self.connectors = [_Connector(n, 1000.0 * (index + 1)) for n in range(1, fleet.connectors + 1)]
        self.expected: list[Expected] = []
        self.sent: list[str] = []  # raw frames sent
        self.received: list[str] = []  # raw frames received
        self.log: list[tuple[str, str]] = []  # ("out" | "in", frame) in order
        self.triggers = 0
        self.connects = 0
        self.client: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    # ---------------------------------------------------------------- connection
    def _headers(self) -> dict[str, str]:
        password = self.config.passwords.get(self.ident) or self.config.passwords.get("*")
        if not password:
            return {}
        token = base64.b64encode(f"{self.ident}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def connect(self) -> None:
        protocol = "ocpp1.6" if self.config.version == "1.6" else "ocpp2.0.1"
        connection = await websockets.connect(
            self.config.url + self.ident,
            subprotocols=[protocol],  # type: ignore[list-item]  # websockets wants its Subprotocol NewType; a str is one at run time
            additional_headers=self._headers(),
            open_timeout=10,
            compression=None,
            ping_interval=None,
        )
        cls = _Client16 if self.config.version == "1.6" else _Client201
        self.client = cls(self.ident, _Recorder(connection, self), response_timeout=10)
        self.client.sim = self
        self.connects += 1
        self._reader = asyncio.ensure_future(self._read(self.client))

    async def _read(self, client: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await client.start()

    async def start(self) -> None:
        await self.connect()
        await self.boot()

    async def stop(self) -> None:
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self.client is not None:
            await self.client._connection.close()

    async def drop(self) -> None:
        """Close the connection abruptly (the gateway sees the charge point vanish)."""
        await self.client._connection.close()

    async def reconnect(self) -> None:
        """Reconnect after a drop, retrying until the gateway takes the connection."""
        while True:
            try:
                await self.connect()
                break
            except (OSError, InvalidHandshake, TimeoutError):
                await asyncio.sleep(self.config.reconnect_delay)  # retry pace, not synchronisation
        if self.config.report:
            for connector in self.connectors:
                await self.send_status(connector)

    async def call(self, payload: Any) -> Any:
        try:
            return await self.client.call(payload)
        except ConnectionClosed:
            if self._closing:
                raise
            await self.reconnect()
            return await self.client.call(payload)

    # ---------------------------------------------------------------- messages
    async def boot(self) -> None:
        if self.config.version == "1.6":
            await self.call(call16.BootNotification(charge_point_model="SimAC22", charge_point_vendor="EdgeSim"))
            if self.config.report:
                await self.send_status(None)
        else:
            await self.call(call201.BootNotification(
                charging_station={"model": "SimAC22", "vendor_name": "EdgeSim"}, reason="PowerUp"
            ))
        if self.config.report:
            for connector in self.connectors:
                await self.send_status(connector)

    def device(self, unit: int) -> str:
        return f"ocpp:{self.ident}/{unit}"

    async def send_status(self, connector: _Connector | None) -> None:
        number = 0 if connector is None else connector.number
        state = "Available" if connector is None else connector.state
        self.expected.append(Expected(self.device(number), "connector_status", state, self.now))
        if self.config.version == "1.6":
            await self.call(call16.StatusNotification(
                connector_id=number, error_code="OtherError" if state == "Faulted" else "NoError",
                status=state, timestamp=iso(self.now),
            ))
        else:
            await self.call(call201.StatusNotification(
                timestamp=iso(self.now), connector_status=state, evse_id=number, connector_id=1,
            ))

    def _power(self, connector: _Connector) -> float:
        # Constant current up to 80 % state of charge, then a linear taper to 10 % at 100 %.
        if connector.soc < 80.0:
            return self.config.max_power
        return self.config.max_power * max(0.1, (100.0 - connector.soc) / 20.0)

    def _sample_values(self, connector: _Connector, power: float, context: str) -> list[dict[str, Any]]:
        device = self.device(connector.number)
        current = round(power / VOLTAGE, 2)
        # the charger's body warms with the power it delivers
        temperature = round(18.0 + power / 1000.0, 1)
        if self.config.version == "1.6":
            if self.kilo:
                energy_text, power_text = f"{connector.energy / 1000:.3f}", f"{power / 1000:.3f}"
                energy_value, power_value = float(energy_text) * 1000.0, float(power_text) * 1000.0
            else:
                energy_text, power_text = f"{connector.energy:.0f}", f"{power:.0f}"
                energy_value, power_value = float(energy_text), float(power_text)
            samples: list[dict[str, Any]] = [
                {"value": energy_text, "context": context, "measurand": "Energy.Active.Import.Register",
                 "unit": "kWh" if self.kilo else "Wh"},
                {"value": power_text, "context": context, "measurand": "Power.Active.Import",
                 "unit": "kW" if self.kilo else "W"},
                {"value": f"{current}", "context": context, "measurand": "Current.Import", "unit": "A"},
                {"value": f"{VOLTAGE:.1f}", "context": context, "measurand": "Voltage", "unit": "V"},
                {"value": f"{connector.soc:.0f}", "context": context, "measurand": "SoC",
                 "unit": "Percent", "location": "EV"},
                {"value": f"{temperature:.1f}", "context": context, "measurand": "Temperature",
                 "unit": "Celsius", "location": "Body"},
            ]
        else:
            # 2.0.1: numbers, with a unitOfMeasure multiplier on odd charge points (kWh as Wh x 10^3).
            multiplier = 3 if self.kilo else 0
            energy_raw = round(connector.energy / 10**multiplier, 3)
            power_raw = round(power / 10**multiplier, 3)
            energy_value = energy_raw * 10.0**multiplier
            power_value = power_raw * 10.0**multiplier
            samples = [
                {"value": energy_raw, "context": context, "measurand": "Energy.Active.Import.Register",
                 "unitOfMeasure": {"unit": "Wh", "multiplier": multiplier}},
                {"value": power_raw, "context": context, "measurand": "Power.Active.Import",
                 "unitOfMeasure": {"unit": "W", "multiplier": multiplier}},
                {"value": current, "context": context, "measurand": "Current.Import",
                 "unitOfMeasure": {"unit": "A"}},
                {"value": VOLTAGE, "context": context, "measurand": "Voltage", "unitOfMeasure": {"unit": "V"}},
                {"value": round(connector.soc), "context": context, "measurand": "SoC",
                 "location": "EV", "unitOfMeasure": {"unit": "Percent"}},
            ]  # 2.0.1 has no Temperature measurand (MeasurandEnumType)
            current = float(current)
        soc = float(samples[4]["value"])
        for metric, value in (
            ("energy_active_import_register", energy_value), ("power_active_import", power_value),
            ("current_import", float(current)), ("voltage", VOLTAGE), ("state_of_charge", soc),
        ):
            self.expected.append(Expected(device, metric, value, self.now))
        if len(samples) > 5:
            self.expected.append(Expected(device, "temperature", float(samples[5]["value"]), self.now))
        return samples

    async def send_meter_values(self, connector: _Connector, context: str = "Sample.Periodic") -> None:
        power = self._power(connector) if connector.state in ("Charging", "Occupied") else 0.0
        samples = self._sample_values(connector, power, context)
        if self.config.version == "1.6":
            await self.call(call16.MeterValues(
                connector_id=connector.number,
                meter_value=[{"timestamp": iso(self.now), "sampledValue": samples}],
                transaction_id=connector.transaction if isinstance(connector.transaction, int) else None,
            ))
        else:
            await self.call(call201.MeterValues(
                evse_id=connector.number,
                meter_value=[{"timestamp": iso(self.now), "sampled_value": samples}],
            ))

    # ---------------------------------------------------------------- the session state machine
    async def step(self) -> None:
        """Advance the virtual clock by one tick and play each connector's next move."""
        self.now += self.config.time_step
        for connector in self.connectors:
            if connector.pending and connector.state == "Available":
                state, connector.pending = connector.pending, None
                if state != connector.state:
                    await self._set(connector, state)
                continue
            if connector.state == "Unavailable":
                continue
            if self.config.version == "1.6":
                await self._step16(connector)
            else:
                await self._step201(connector)

    async def _set(self, connector: _Connector, state: str) -> None:
        connector.state = state
        if self.config.report:
            await self.send_status(connector)

    def _charge(self, connector: _Connector) -> float:
        power = self._power(connector)
        connector.energy += power * self.config.time_step / 3600.0
        connector.soc = min(100.0, connector.soc + power * self.config.time_step / 3600.0 / 600.0)
        return power

    async def _step16(self, c: _Connector) -> None:
        rng = self.rng
        if c.state == "Available":
            if rng.random() < self.config.fault_probability:
                await self._set(c, "Faulted")
                c.ticks_left = 2
            elif rng.random() < self.config.plug_probability:
                await self._set(c, "Preparing")
        elif c.state == "Faulted":
            c.ticks_left -= 1
            if c.ticks_left <= 0:
                await self._set(c, "Available")
        elif c.state == "Preparing":
            meter_start = round(c.energy)
            # recorded before the call, like every reading: a call whose answer times out was
            # still sent, and the gateway counts its reading
            self.expected.append(Expected(self.device(c.number), "energy_active_import_register",
                                          float(meter_start), self.now))
            result = await self.call(call16.StartTransaction(
                connector_id=c.number, id_tag="SIMTAG01", meter_start=meter_start, timestamp=iso(self.now)
            ))
            c.transaction = result.transaction_id if result is not None else None
            c.soc = 20.0 + rng.random() * 50.0
            c.ticks_left = self.config.charge_ticks
            await self._set(c, "Charging")
        elif c.state == "Charging":
            self._charge(c)
            if self.config.report:
                await self.send_meter_values(c)
            c.ticks_left -= 1
            if c.ticks_left <= 0:
                await self._set(c, "Finishing")
                meter_stop = round(c.energy)
                self.expected.append(Expected(self.device(c.number), "energy_active_import_register",
                                              float(meter_stop), self.now))
                await self.call(call16.StopTransaction(
                    meter_stop=meter_stop, timestamp=iso(self.now), transaction_id=c.transaction or 0,
                    reason="EVDisconnected",
                ))
                c.transaction = None
        elif c.state == "Finishing":
            await self._set(c, "Available")

    async def _transaction_event(self, c: _Connector, event: str, trigger: str,
                                 meter: list[dict[str, Any]] | None) -> None:
        info: dict[str, Any] = {"transaction_id": str(c.transaction)}
        if event != "Ended":
            info["charging_state"] = "Charging" if event == "Updated" else "EVConnected"
        else:
            info["stopped_reason"] = "EVDisconnected"
        await self.call(call201.TransactionEvent(
            event_type=event, timestamp=iso(self.now), trigger_reason=trigger, seq_no=c.seq,
            transaction_info=info, meter_value=meter,
            evse={"id": c.number, "connector_id": 1} if event == "Started" else None,
        ))
        c.seq += 1

    async def _step201(self, c: _Connector) -> None:
        rng = self.rng
        if c.state == "Available":
            if rng.random() < self.config.fault_probability:
                await self._set(c, "Faulted")
                c.ticks_left = 2
            elif rng.random() < self.config.plug_probability:
                await self._set(c, "Occupied")
                c.transaction = f"{self.ident}-{c.number}-{int(self.now)}"
                c.seq = 0
                c.soc = 20.0 + rng.random() * 50.0
                c.ticks_left = self.config.charge_ticks
                meter = [{"timestamp": iso(self.now),
                          "sampled_value": self._sample_values(c, 0.0, "Transaction.Begin")}]
                await self._transaction_event(c, "Started", "CablePluggedIn", meter)
        elif c.state == "Faulted":
            c.ticks_left -= 1
            if c.ticks_left <= 0:
                await self._set(c, "Available")
        elif c.state == "Occupied":
            power = self._charge(c)
            c.ticks_left -= 1
            if c.ticks_left > 0:
                meter = [{"timestamp": iso(self.now),
                          "sampled_value": self._sample_values(c, power, "Sample.Periodic")}]
                await self._transaction_event(c, "Updated", "MeterValuePeriodic", meter)
            else:
                meter = [{"timestamp": iso(self.now),
                          "sampled_value": self._sample_values(c, 0.0, "Transaction.End")}]
                await self._transaction_event(c, "Ended", "EVDeparted", meter)
                c.transaction = None
                await self._set(c, "Available")

    async def on_change_availability(self, unit: int | None, operative: bool) -> None:
        """ChangeAvailability (1.6 section 5.2, 2.0.1 G03): idle connectors switch at once."""
        state = "Available" if operative else "Unavailable"
        for connector in self.connectors:
            if unit not in (None, 0, connector.number):
                continue
            if connector.state in ("Available", "Unavailable"):
                if connector.state != state:
                    await self._set(connector, state)
            else:
                connector.pending = state  # "Scheduled": applied once the session ends

    def availability_answer(self, unit: int | None) -> str:
        busy = any(c.state not in ("Available", "Unavailable") for c in self.connectors
                   if unit in (None, 0, c.number))
        return "Scheduled" if busy else "Accepted"

    async def on_trigger(self, message: str) -> None:
        """What a triggered charge point sends after accepting TriggerMessage (1.6 5.17, F06)."""
        self.triggers += 1
        if message == "StatusNotification":
            for connector in self.connectors:
                await self.send_status(connector)
        elif message == "MeterValues":
            for connector in self.connectors:
                await self.send_meter_values(connector, "Trigger")


class _Recorder:
    """Wraps the WebSocket so every raw frame in and out is recorded."""

    def __init__(self, connection: Any, sim: SimChargePoint) -> None:
        self._connection = connection
        self._sim = sim

    async def send(self, frame: str) -> None:
        self._sim.sent.append(frame)
        self._sim.log.append(("out", frame))
        await self._connection.send(frame)

    async def recv(self) -> str:
        frame: str = await self._connection.recv()  # OCPP-J frames are text messages
        self._sim.received.append(frame)
        self._sim.log.append(("in", frame))
        return frame

    async def close(self) -> None:
        await self._connection.close()


class _Client16(Client16):
    sim: SimChargePoint

    @on(Action16.trigger_message)
    def on_trigger_message(self, requested_message: str, **_: Any) -> result16.TriggerMessage:
        supported = requested_message in ("StatusNotification", "MeterValues")
        return result16.TriggerMessage(status="Accepted" if supported else "NotImplemented")

    @after(Action16.trigger_message)
    async def after_trigger_message(self, requested_message: str, **_: Any) -> None:
        await self.sim.on_trigger(requested_message)

    @on(Action16.change_availability)
    def on_change_availability(self, connector_id: int, **_: Any) -> result16.ChangeAvailability:
        return result16.ChangeAvailability(status=self.sim.availability_answer(connector_id))

    @after(Action16.change_availability)
    async def after_change_availability(self, connector_id: int, type: str, **_: Any) -> None:
        await self.sim.on_change_availability(connector_id, type == "Operative")


class _Client201(Client201):
    sim: SimChargePoint

    @on(Action201.trigger_message)
    def on_trigger_message(self, requested_message: str, **_: Any) -> result201.TriggerMessage:
        supported = requested_message in ("StatusNotification", "MeterValues")
        return result201.TriggerMessage(status="Accepted" if supported else "NotImplemented")

    @after(Action201.trigger_message)
    async def after_trigger_message(self, requested_message: str, **_: Any) -> None:
        await self.sim.on_trigger(requested_message)

    @on(Action201.change_availability)
    def on_change_availability(self, evse: Any = None, **_: Any) -> result201.ChangeAvailability:
        unit = evse.get("id") if isinstance(evse, dict) else None
        return result201.ChangeAvailability(status=self.sim.availability_answer(unit))

    @after(Action201.change_availability)
    async def after_change_availability(self, operational_status: str, evse: Any = None, **_: Any) -> None:
        unit = evse.get("id") if isinstance(evse, dict) else None
        await self.sim.on_change_availability(unit, operational_status == "Operative")


class Fleet:
    """N charge points of M connectors; a library for tests and the `edge-gateway-sim ocpp` CLI."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.charge_points = [SimChargePoint(config, i) for i in range(config.charge_points)]

    async def start(self) -> None:
        await asyncio.gather(*(cp.start() for cp in self.charge_points))

    async def step(self, ticks: int = 1) -> None:
        for _ in range(ticks):
            await asyncio.gather(*(cp.step() for cp in self.charge_points))
            if self.config.tick:
                await asyncio.sleep(self.config.tick)  # the simulated pace, not synchronisation

    async def stop(self) -> None:
        await asyncio.gather(*(cp.stop() for cp in self.charge_points), return_exceptions=True)

    @property
    def expected(self) -> list[Expected]:
        return [e for cp in self.charge_points for e in cp.expected]

    @property
    def frames_sent(self) -> int:
        return sum(len(cp.sent) for cp in self.charge_points)
