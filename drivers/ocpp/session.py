"""Endpoint mode: the gateway is the charge point's central system.

Thin sessions with their own routing: `@on("Action")` handlers build the answer as a wire
(camelCase) dict; the route table is built once per session class, with the request and response
validators compiled once per action from the published JSON schemas (`schemas.py`). Every
message is validated exactly once, in both directions: the CALLs a charge point sends and the
answers the gateway returns to them, the gateway's own CALLs (TriggerMessage) and the charge
point's answers to those. Readings come from the raw payload through the shared `Mirror` once
the call validated and was answered.

Per the specifications:
- malformed frames are answered with a CALLERROR, with id "-1" when the id cannot be read
  (2.0.1 Part 4 section 4.2.3);
- 1.6 spells two error codes differently (OCPP-J 1.6 section 4.2.3 and its errata:
  FormationViolation, OccurenceConstraintViolation), and NotImplemented/NotSupported mean
  "action unknown" / "known but not handled" (both specifications, table "Valid Error Codes");
- one outstanding CALL per direction (1.6 section 4.1.1, 2.0.1 Part 4 section 4.1.1): the
  gateway's own CALLs pass one at a time, and a CALLRESULT/CALLERROR that answers none of them is
  counted and dropped (nothing queues it).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple

from drivers.ocpp.decode import (
    CALL,
    CALLRESULT,
    V16,
    V201,
    OcppDecodeError,
    call_error_frame,
    encode_frame,
    parse_frame,
    readable_message_id,
)
from drivers.ocpp.mirror import Mirror
from drivers.ocpp.schemas import (
    REQUEST,
    RESPONSE,
    PayloadError,
    Validator,
    known_actions,
    lazy_validator,
)
from drivers.ocpp.transport import CLOSE_FLOOD, FrameBudget, ServerConnection, close_misbehaving
from gateway.driver import DriverContext

__all__ = [
    "FRAME_ERROR_CODES",
    "SESSIONS",
    "EndpointSettings",
    "Route",
    "Session16",
    "Session201",
    "error_code",
    "on",
    "poll",
    "utc_now",
]

# decode cause -> (1.6 code, 2.0.1 code). 2.0.1 Part 4 section 4.3 has RpcFrameworkError for
# "not a valid RPC request" and MessageTypeNotSupported; 1.6 has only FormationViolation.
FRAME_ERROR_CODES: dict[str, tuple[str, str]] = {
    "not_json": ("FormationViolation", "RpcFrameworkError"),
    "too_deep": ("FormationViolation", "RpcFrameworkError"),
    "too_large": ("FormationViolation", "RpcFrameworkError"),
    "not_an_rpc_array": ("FormationViolation", "RpcFrameworkError"),
    "bad_message_id": ("FormationViolation", "RpcFrameworkError"),
    "bad_call": ("FormationViolation", "FormatViolation"),
    "bad_message_type": ("FormationViolation", "MessageTypeNotSupported"),
}
# The 2.0.1 spelling -> the spelling this version's specification uses.
_SPELLING: dict[str, dict[str, str]] = {
    V16: {
        "FormatViolation": "FormationViolation",
        "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
    },
    V201: {"OccurrenceConstraintViolation": "OccurenceConstraintViolation"},
}
# errorDescription per code (the specifications' table "Valid Error Codes", shortened).
_DESCRIPTIONS: dict[str, str] = {
    "NotImplemented": "Requested Action is not known by receiver",
    "NotSupported": "Requested Action is recognized but not supported by the receiver",
    "InternalError": "An internal error occurred and the receiver was not able to process the Action",
    "FormatViolation": "Payload for Action is syntactically incorrect",
    "TypeConstraintViolation": "Payload for Action violates data type constraints",
    "ProtocolError": "Payload for Action is incomplete",
}


def error_code(version: str, code: str) -> str:
    return _SPELLING[version].get(code, code)


def utc_now(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def on(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a session method as the handler of one action (read once, when the class is made)."""

    def mark(handler: Callable[..., Any]) -> Callable[..., Any]:
        handler.ocpp_action = action  # type: ignore[attr-defined]  # a routing tag on the function object
        return handler

    return mark


class Route(NamedTuple):
    handler: Callable[[Any, dict[str, Any]], dict[str, Any]]
    check_request: Validator
    check_response: Validator


class EndpointSettings:
    """What every session of one driver shares (one object per driver, not per connection)."""

    __slots__ = ("ctx", "heartbeat_interval", "call_timeout", "frame_rate", "frame_burst")

    def __init__(self, ctx: DriverContext, *, heartbeat_interval: int, call_timeout: float,
                 frame_rate: float, frame_burst: int) -> None:
        self.ctx = ctx
        self.heartbeat_interval = heartbeat_interval
        self.call_timeout = call_timeout
        # Token bucket of frames from one charge point: `frame_rate` per second, `frame_burst`
        # at once; 0 turns the limit off.
        self.frame_rate = frame_rate
        self.frame_burst = frame_burst


class _Pending(NamedTuple):
    message_id: str
    action: str
    answer: asyncio.Future[Any]


class _Session:
    """One connected charge point: its connection, its mirror and at most one pending CALL."""

    __slots__ = ("ident", "connection", "mirror", "settings", "_pending", "_lock")

    version: ClassVar[str]
    routes: ClassVar[dict[str, Route]] = {}
    known_actions: ClassVar[frozenset[str]] = frozenset()
    # The gateway's own CALLs (TriggerMessage): their request/response validators.
    outgoing: ClassVar[dict[str, tuple[Validator, Validator]]] = {}
    # 1.6 transaction ids the endpoint hands out: seeded from the clock so ids after a gateway
    # restart do not repeat the previous run's (a 32-bit integer until 2038).
    _transaction_ids: ClassVar[itertools.count[int]] = itertools.count(int(time.time()))
    _call_ids: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        routes: dict[str, Route] = {}
        for member in vars(cls).values():
            action = getattr(member, "ocpp_action", None)
            if action is not None:
                routes[action] = Route(member, lazy_validator(cls.version, action, REQUEST),
                                       lazy_validator(cls.version, action, RESPONSE))
        cls.routes = routes
        cls.known_actions = known_actions(cls.version)
        cls.outgoing = {
            "TriggerMessage": (lazy_validator(cls.version, "TriggerMessage", REQUEST),
                               lazy_validator(cls.version, "TriggerMessage", RESPONSE)),
        }

    def __init__(self, ident: str, connection: ServerConnection, mirror: Mirror,
                 settings: EndpointSettings) -> None:
        self.ident = ident
        self.connection = connection
        self.mirror = mirror
        self.settings = settings
        self._pending: _Pending | None = None
        self._lock: asyncio.Lock | None = None  # made on the first CALL of the gateway's own

    # ------------------------------------------------------------------ receiving
    async def run(self) -> None:
        """Answer frames until the connection closes (raises websockets' ConnectionClosed)."""
        connection = self.connection
        settings = self.settings
        if not settings.frame_rate:
            while True:
                await self.on_frame(await connection.recv())
        clock = asyncio.get_running_loop().time
        budget = FrameBudget(settings.frame_rate, settings.frame_burst, clock())
        while True:
            frame = await connection.recv()
            if not budget.take(clock()):
                settings.ctx.count("closed_flood")
                settings.ctx.decode_error("frame_rate_exceeded", f"over {settings.frame_rate:g} frames/s",
                                          charge_point=self.ident)
                await close_misbehaving(connection, CLOSE_FLOOD, "frame rate limit exceeded")
                return
            await self.on_frame(frame)

    async def on_frame(self, raw: str | bytes) -> None:
        ctx = self.settings.ctx
        received = ctx.clock()
        try:
            frame = parse_frame(raw)
        except OcppDecodeError as error:
            ctx.decode_error(error, charge_point=self.ident)
            codes = FRAME_ERROR_CODES.get(error.cause)
            if codes is not None:
                await self._send_error(readable_message_id(raw), codes[0] if self.version == V16 else codes[1],
                                       "Malformed OCPP-J frame", error.cause)
            return  # a broken CALLRESULT/CALLERROR has nobody to answer
        if frame.kind == CALL:
            route = self.routes.get(frame.action)
            if route is None:
                if frame.action in self.known_actions:
                    await self._refuse(frame.message_id, "NotSupported", f"{frame.action} is not handled by the gateway")
                else:
                    await self._refuse(frame.message_id, "NotImplemented",
                                       f"{frame.action} is not an OCPP {self.version} action")
                return
            try:
                route.check_request(frame.payload)
            except PayloadError as error:
                await self._refuse(frame.message_id, error.code, error.cause)
                return
            answer = self._answer(route, frame.action, frame.payload)
            if answer is None:
                await self._refuse(frame.message_id, "InternalError", frame.action)
                return
            await self.connection.send(encode_frame([CALLRESULT, frame.message_id, answer]))
            self.mirror.on_call(frame.action, frame.payload, received)
        else:
            self._on_answer(frame.kind, frame.message_id, frame.payload)

    def _answer(self, route: Route, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The handler's answer, validated; None (-> InternalError) if the gateway got it wrong."""
        try:
            answer = route.handler(self, payload)
            route.check_response(answer)
        except Exception as error:  # a handler bug answers InternalError, the session goes on
            self.settings.ctx.count("handler_errors")
            self.settings.ctx.log.warning("handler_failed", action=action,
                                          error=f"{type(error).__name__}: {error}"[:200])
            return None
        return answer

    async def _refuse(self, message_id: str, code: str, cause: str) -> None:
        self.settings.ctx.decode_error(f"callerror_{code}", cause[:120], charge_point=self.ident)
        await self._send_error(message_id, error_code(self.version, code), _DESCRIPTIONS.get(code, ""), cause)

    async def _send_error(self, message_id: str, code: str, description: str, cause: str) -> None:
        self.settings.ctx.count("callerrors_sent")
        await self.connection.send(call_error_frame(message_id, code, description, {"cause": cause[:200]}))

    def _on_answer(self, kind: int, message_id: str, payload: Any) -> None:
        pending = self._pending
        if pending is None or pending.message_id != message_id or pending.answer.done():
            # Answers nothing the gateway asked (or arrived after the timeout): counted, logged
            # once per cause, dropped. Nothing is queued, so a flood of them holds no memory.
            cause = "unmatched_callresult" if kind == CALLRESULT else "unmatched_callerror"
            self.settings.ctx.decode_error(cause, message_id[:40], charge_point=self.ident)
            return
        if kind == CALLRESULT:
            try:
                self.outgoing[pending.action][1](payload)
            except PayloadError as error:
                pending.answer.set_exception(error)
                return
        pending.answer.set_result((kind, payload))

    # ------------------------------------------------------------------ the gateway's own CALLs
    async def call(self, action: str, payload: dict[str, Any]) -> tuple[int, Any]:
        """Send a CALL and wait for its answer: (CALLRESULT, payload) or (CALLERROR, [code, ...]).

        Raises TimeoutError after call_timeout and PayloadError for an answer its schema refuses.
        """
        check_request = self.outgoing[action][0]
        check_request(payload)  # the gateway's own payload: a failure here is a gateway bug
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            message_id = f"gw-{next(self._call_ids)}"
            answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending = _Pending(message_id, action, answer)
            try:
                await self.connection.send(encode_frame([CALL, message_id, action, payload]))
                result: tuple[int, Any] = await asyncio.wait_for(answer, self.settings.call_timeout)
                return result
            finally:
                self._pending = None

    def now(self) -> str:
        return utc_now(self.settings.ctx.clock)

    @classmethod
    def next_transaction_id(cls) -> int:
        return next(cls._transaction_ids)


_EMPTY: dict[str, Any] = {}


class Session16(_Session):
    """OCPP 1.6J (the actions of "Core" a charge point initiates, section 4)."""

    __slots__ = ()
    version = V16

    @on("BootNotification")
    def on_boot_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Accepted", "currentTime": self.now(), "interval": self.settings.heartbeat_interval}

    @on("Heartbeat")
    def on_heartbeat(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": self.now()}

    @on("StatusNotification")
    def on_status_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _EMPTY

    @on("MeterValues")
    def on_meter_values(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _EMPTY

    @on("Authorize")
    def on_authorize(self, payload: dict[str, Any]) -> dict[str, Any]:
        # The gateway only observes: every id tag may charge (an operator CSMS decides otherwise).
        return {"idTagInfo": {"status": "Accepted"}}

    @on("StartTransaction")
    def on_start_transaction(self, payload: dict[str, Any]) -> dict[str, Any]:
        transaction_id = self.next_transaction_id()
        self.mirror.bind_transaction(transaction_id, payload["connectorId"])
        return {"transactionId": transaction_id, "idTagInfo": {"status": "Accepted"}}

    @on("StopTransaction")
    def on_stop_transaction(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _EMPTY

    @on("DataTransfer")
    def on_data_transfer(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": "UnknownVendorId"}

    @on("FirmwareStatusNotification")
    def on_firmware_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _EMPTY

    @on("DiagnosticsStatusNotification")
    def on_diagnostics_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _EMPTY


class Session201(_Session):
    """OCPP 2.0.1 (the messages of blocks B, C, E, G, J, L, N a charging station initiates)."""

    __slots__ = ()
    version = V201

    @on("BootNotification")
    def on_boot_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Accepted", "currentTime": self.now(), "interval": self.settings.heartbeat_interval}

    @on("Heartbeat")
    def on_heartbeat(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": self.now()}

    @on("StatusNotification")
    def on_status_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _EMPTY

    @on("MeterValues")
    def on_meter_values(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _EMPTY

    @on("TransactionEvent")
    def on_transaction_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _EMPTY

    @on("Authorize")
    def on_authorize(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"idTokenInfo": {"status": "Accepted"}}

    @on("NotifyEvent")
    def on_notify_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _EMPTY

    @on("SecurityEventNotification")
    def on_security_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _EMPTY

    @on("FirmwareStatusNotification")
    def on_firmware_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _EMPTY


SESSIONS: dict[str, type[_Session]] = {"ocpp1.6": Session16, "ocpp2.0.1": Session201}


async def poll(session: _Session, interval: float) -> None:
    """Ask a quiet charge point for its status and meter values, one CALL at a time.

    TriggerMessage (1.6 section 5.17, 2.0.1 F06); `call` holds the session's lock until the
    answer (or the timeout): the spec's "one outstanding CALL per connection" rule.
    """
    mirror = session.mirror
    ctx = session.settings.ctx
    meter_actions = ("MeterValues", "StopTransaction", "TransactionEvent")
    while True:
        await asyncio.sleep(interval)
        now = ctx.clock()
        wanted = []
        if now - mirror.last_report.get("StatusNotification", 0.0) >= interval:
            wanted.append("StatusNotification")
        if all(now - mirror.last_report.get(a, 0.0) >= interval for a in meter_actions):
            wanted.append("MeterValues")
        for message in wanted:
            try:
                await session.call("TriggerMessage", {"requestedMessage": message})
                ctx.count("triggers_sent")
            except TimeoutError:
                ctx.count("trigger_timeouts")
            except PayloadError as error:
                ctx.decode_error(f"callresult_{error.code}", error.cause[:120], charge_point=session.ident)
