"""Proxy mode: a raw frame relay between one charge point and the operator's CSMS.

Every text frame is passed on exactly as received, both ways (message ids, payloads, spacing);
the gateway parses a *copy* to mirror status and meter values. It adds frames of its own only
- towards the charge point: TriggerMessage CALLs when polling or after the CSMS link came back
  (their ids start with "gw-"; the answers are consumed, never relayed), and
- while the CSMS is unreachable: answers to the charge point's CALLs (see README.md, "Proxy").

One outstanding CALL per direction (OCPP-J 1.6 section 4.1.1, 2.0.1 Part 4 section 4.1.1): CALLs
towards the charge point, from the CSMS or the gateway, pass one at a time through `_gate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import msgspec
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from drivers.ocpp.decode import (
    CALL,
    CALLRESULT,
    V16,
    OcppDecodeError,
    call_error_frame,
    parse_frame,
    readable_message_id,
)
from drivers.ocpp.mirror import Mirror
from drivers.ocpp.session import FRAME_ERROR_CODES, utc_now
from drivers.ocpp.transport import (
    CLOSE_FLOOD,
    ClientConnection,
    FrameBudget,
    ServerConnection,
    close_misbehaving,
    open_upstream,
)
from gateway.backoff import Backoff
from gateway.driver import DriverContext

__all__ = ["ProxySession"]

_json_frame = msgspec.json.Encoder().encode

# Calls the gateway answers itself while the CSMS is unreachable: action -> answer builder.
# Transaction-related messages are NOT answered with success: they get a CALLERROR so that the
# charge point keeps them queued and retries (1.6 section 4.7 "Transaction-related messages",
# 2.0.1 E13), and the CSMS receives them once it is back.


def _boot(proxy: ProxySession, payload: Any) -> dict[str, Any]:
    return {"status": "Accepted", "currentTime": utc_now(proxy.ctx.clock),
            "interval": proxy.heartbeat_interval}


def _heartbeat(proxy: ProxySession, payload: Any) -> dict[str, Any]:
    return {"currentTime": utc_now(proxy.ctx.clock)}


def _empty(proxy: ProxySession, payload: Any) -> dict[str, Any]:
    return {}


OFFLINE_ANSWERS = {
    "BootNotification": _boot,
    "Heartbeat": _heartbeat,
    "StatusNotification": _empty,
    "MeterValues": _empty,  # 1.6: only without transactionId (see _offline_answer)
}


class ProxySession:
    def __init__(
        self,
        *,
        ctx: DriverContext,
        downstream: ServerConnection,
        charge_point: str,
        protocol: str,
        authorization: str | None,
        upstream_url: str,
        mirror: Mirror,
        settings: Any,
    ) -> None:
        self.ctx = ctx
        self.downstream = downstream
        self.charge_point = charge_point
        self.protocol = protocol
        self.version = mirror.version
        self.url = upstream_url + charge_point
        self.mirror = mirror
        self.settings = settings
        self.heartbeat_interval = settings.heartbeat_interval
        self.authorization = authorization  # the charge point's, passed on to the CSMS
        self.upstream: ClientConnection | None = None
        self._gate = asyncio.Lock()  # one outstanding CALL towards the charge point
        self._gate_owner: str | None = None
        self._own_calls: dict[str, asyncio.Future[Any]] = {}
        self._cp_calls: dict[str, tuple[str, Any]] = {}  # charge point CALLs awaiting the CSMS
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unreachable_logged = False  # log an outage once, not every retry

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        try:
            await self._connect_once()  # before reading, so BootNotification goes upstream
            self._spawn(self._upstream_loop())
            settings = self.settings
            clock = asyncio.get_running_loop().time
            budget = FrameBudget(settings.max_frames_per_second, settings.max_frames_burst, clock())
            async for frame in self.downstream:
                if settings.max_frames_per_second and not budget.take(clock()):
                    self.ctx.count("closed_flood")
                    self.ctx.decode_error("frame_rate_exceeded", f"over {settings.max_frames_per_second:g}"
                                          " frames/s", charge_point=self.charge_point)
                    await close_misbehaving(self.downstream, CLOSE_FLOOD, "frame rate limit exceeded")
                    break
                await self._from_charge_point(frame)
        except ConnectionClosed:
            pass
        finally:
            for task in self._tasks:
                task.cancel()
            for future in self._own_calls.values():
                future.cancel()
            if self.upstream is not None:
                with contextlib.suppress(Exception):
                    await self.upstream.close()
            self.upstream = None

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_once(self) -> bool:
        try:
            self.upstream = await open_upstream(
                self.url,
                protocol=self.protocol,
                authorization=self.authorization,
                ca_file=self.settings.upstream_ca_file,
                max_size=self.settings.max_message_bytes,
                ping_interval=self.settings.ping_interval,
                open_timeout=min(10.0, self.settings.call_timeout),
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ConnectionError) as error:
            self.ctx.count("upstream_failures")
            if not self._unreachable_logged:
                self._unreachable_logged = True
                self.ctx.log.warning("csms_unreachable", note="answering the charge point locally",
                                     charge_point=self.charge_point, error=str(error)[:200])
            return False
        self.ctx.count("upstream_connects")
        if self._unreachable_logged:
            self._unreachable_logged = False
            self.ctx.log.info("csms_reachable", charge_point=self.charge_point)
        return True

    async def _upstream_loop(self) -> None:
        """Relay CSMS frames while linked; reconnect with the gateway's backoff (jitter spreads
        a fleet reconnecting after a CSMS outage)."""
        backoff = Backoff(self.settings.upstream_backoff_initial, self.settings.upstream_backoff_max)
        while True:
            if self.upstream is None:
                await asyncio.sleep(backoff.next_delay())
                if not await self._connect_once():
                    continue
                backoff.reset()
                # The CSMS missed what the gateway answered meanwhile: ask for a fresh status.
                self._spawn(self.gateway_call(*self.trigger("StatusNotification")))
            upstream = self.upstream
            assert upstream is not None
            try:
                async for frame in upstream:
                    await self._from_csms(frame)
            except ConnectionClosed:
                pass
            self.upstream = None
            self.ctx.count("upstream_disconnects")
            self.ctx.log.info("csms_link_lost", charge_point=self.charge_point)

    # ------------------------------------------------------------------ charge point -> CSMS
    async def _from_charge_point(self, frame: str | bytes) -> None:
        ctx = self.ctx
        received = ctx.clock()
        ctx.count("frames_from_charge_point")
        try:
            parsed = parse_frame(frame)
        except OcppDecodeError as error:
            ctx.decode_error(error, charge_point=self.charge_point)
            if not await self._to_csms(frame) and error.cause in FRAME_ERROR_CODES:
                code = FRAME_ERROR_CODES[error.cause][0 if self.version == V16 else 1]
                await self._to_charge_point(call_error_frame(
                    readable_message_id(frame), code, "Malformed OCPP-J frame", {"cause": error.cause}
                ))
            return
        if parsed.kind == CALL:
            self.mirror.on_call(parsed.action, parsed.payload, received)
            if len(self._cp_calls) > 32:  # a CSMS that never answers cannot grow this
                self._cp_calls.pop(next(iter(self._cp_calls)))
            self._cp_calls[parsed.message_id] = (parsed.action, parsed.payload)
            if not await self._to_csms(frame):
                await self._offline_answer(parsed.message_id, parsed.action, parsed.payload)
            return
        # A CALLRESULT or CALLERROR: the answer to one of the gateway's CALLs or the CSMS's.
        future = self._own_calls.pop(parsed.message_id, None)
        if future is not None:
            if not future.done():
                future.set_result(parsed)
        else:
            await self._to_csms(frame)
        if self._gate_owner == parsed.message_id:
            self._release_gate()

    async def _to_csms(self, frame: str | bytes) -> bool:
        upstream = self.upstream
        if upstream is None:
            return False
        try:
            await upstream.send(frame)
        except ConnectionClosed:
            return False
        self.ctx.count("frames_to_csms")
        return True

    async def _offline_answer(self, message_id: str, action: str, payload: Any) -> None:
        answer = OFFLINE_ANSWERS.get(action)
        if action == "MeterValues" and isinstance(payload, dict) and "transactionId" in payload:
            answer = None  # transaction-related in 1.6: let the charge point retry it later
        self._cp_calls.pop(message_id, None)
        if answer is None:
            self.ctx.count("offline_callerrors")
            await self._to_charge_point(call_error_frame(
                message_id, "InternalError", "Central system unreachable, retry later", {}
            ))
            return
        self.ctx.count("offline_answers")
        await self._to_charge_point(_json_frame([CALLRESULT, message_id, answer(self, payload)]).decode())

    # ------------------------------------------------------------------ CSMS -> charge point
    async def _from_csms(self, frame: str | bytes) -> None:
        self.ctx.count("frames_from_csms")
        try:
            parsed = parse_frame(frame)
        except OcppDecodeError:
            self.ctx.count("malformed_from_csms")
            await self._to_charge_point(frame)  # not ours to judge: relay unchanged
            return
        if parsed.kind == CALL:
            await self._acquire_gate(parsed.message_id)
            await self._to_charge_point(frame)
            return
        request = self._cp_calls.pop(parsed.message_id, None)
        await self._to_charge_point(frame)
        if request is not None and parsed.kind == CALLRESULT:
            self.mirror.on_result(request[0], request[1], parsed.payload)

    async def _to_charge_point(self, frame: str | bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.downstream.send(frame)

    async def _acquire_gate(self, message_id: str) -> None:
        await self._gate.acquire()
        self._gate_owner = message_id
        # Released by the answer, or after call_timeout if the charge point never answers.
        asyncio.get_running_loop().call_later(
            self.settings.call_timeout, self._release_gate_if, message_id
        )

    def _release_gate_if(self, message_id: str) -> None:
        if self._gate_owner == message_id:
            self._release_gate()

    def _release_gate(self) -> None:
        self._gate_owner = None
        if self._gate.locked():
            self._gate.release()

    # ------------------------------------------------------------------ the gateway's own CALLs
    async def gateway_call(self, action: str, payload: dict[str, Any]) -> Any:
        """Send a CALL of the gateway's own to the charge point and return its answer frame."""
        message_id = f"gw-{uuid.uuid4().hex[:20]}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._acquire_gate(message_id)
        self._own_calls[message_id] = future
        try:
            await self._to_charge_point(_json_frame([CALL, message_id, action, payload]).decode())
            self.ctx.count("gateway_calls")
            return await asyncio.wait_for(future, self.settings.call_timeout)
        except TimeoutError:
            self.ctx.count("trigger_timeouts")
            return None
        finally:
            self._own_calls.pop(message_id, None)
            self._release_gate_if(message_id)

    def trigger(self, message: str) -> tuple[str, dict[str, Any]]:
        return "TriggerMessage", {"requestedMessage": message}


async def poll(proxy: ProxySession, interval: float) -> None:
    """Polling in proxy mode: the same rule as the endpoint's, through the CALL gate."""
    mirror = proxy.mirror
    meter_actions = ("MeterValues", "StopTransaction", "TransactionEvent")
    while True:
        await asyncio.sleep(interval)
        now = proxy.ctx.clock()
        if now - mirror.last_report.get("StatusNotification", 0.0) >= interval:
            await proxy.gateway_call(*proxy.trigger("StatusNotification"))
            proxy.ctx.count("triggers_sent")
        if all(now - mirror.last_report.get(a, 0.0) >= interval for a in meter_actions):
            await proxy.gateway_call(*proxy.trigger("MeterValues"))
            proxy.ctx.count("triggers_sent")
