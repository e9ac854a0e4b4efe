"""Endpoint mode: the gateway is the charge point's central system.

Thin sessions on the `ocpp` package: `@on(Action.X)` handlers only build the answers; schema
validation stays on. Readings come from the raw (camelCase) payload through the shared `Mirror`
once the call validated and was answered. Two corrections to the package, both per the spec:
- malformed frames are answered with a CALLERROR (the package only logs them), with id "-1"
  when the id cannot be read (2.0.1 Part 4 section 4.2.3);
- 1.6 spells two error codes differently (OCPP-J 1.6 section 4.2.3 and its errata:
  FormationViolation, OccurenceConstraintViolation), and NotImplemented/NotSupported mean
  "action unknown" / "known but not handled" (both specifications, table "Valid Error Codes").
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.messages import (
    Call,
    CallError,
    CallResult,
    _validate_payload,  # the package's schemas and error mapping, no thread hop
)
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201

from drivers.ocpp.decode import (
    CALL,
    CALLRESULT,
    V16,
    V201,
    OcppDecodeError,
    call_error_frame,
    parse_frame,
    readable_message_id,
)
from drivers.ocpp.mirror import Mirror
from gateway.driver import DriverContext

__all__ = ["FRAME_ERROR_CODES", "Session16", "Session201", "error_code", "utc_now"]

# decode cause -> (1.6 code, 2.0.1 code). 2.0.1 Part 4 section 4.3 has RpcFrameworkError for
# "not a valid RPC request" and MessageTypeNotSupported; 1.6 has only FormationViolation.
FRAME_ERROR_CODES: dict[str, tuple[str, str]] = {
    "not_json": ("FormationViolation", "RpcFrameworkError"),
    "not_an_rpc_array": ("FormationViolation", "RpcFrameworkError"),
    "bad_message_id": ("FormationViolation", "RpcFrameworkError"),
    "bad_call": ("FormationViolation", "FormatViolation"),
    "bad_message_type": ("FormationViolation", "MessageTypeNotSupported"),
}
# The package's code -> the spelling this version's specification uses.
_SPELLING: dict[str, dict[str, str]] = {
    V16: {
        "FormatViolation": "FormationViolation",
        "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
    },
    V201: {"OccurrenceConstraintViolation": "OccurenceConstraintViolation"},
}


def error_code(version: str, code: str) -> str:
    return _SPELLING[version].get(code, code)


def utc_now(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Session:
    """What both versions share; mixed in before the package's ChargePoint class."""

    version: ClassVar[str]
    known_actions: ClassVar[frozenset[str]]
    # provided by the ocpp package's ChargePoint this is mixed into
    id: str
    route_map: dict[str, Any]
    _ocpp_version: str
    _response_queue: asyncio.Queue[Any]
    _send: Callable[[str], Awaitable[None]]
    # 1.6 transaction ids the endpoint hands out: seeded from the clock so ids after a gateway
    # restart do not repeat the previous run's (a 32-bit integer until 2038).
    _transaction_ids: ClassVar[itertools.count[int]] = itertools.count(int(time.time()))

    def setup(self, ctx: DriverContext, mirror: Mirror, heartbeat_interval: int) -> None:
        self.ctx = ctx
        self.mirror = mirror
        self.heartbeat_interval = heartbeat_interval

    async def route_message(self, raw_msg: Any) -> None:
        ctx = self.ctx
        received = ctx.clock()
        try:
            frame = parse_frame(raw_msg)
        except OcppDecodeError as error:
            ctx.decode_error(error, charge_point=self.id)
            if error.cause in FRAME_ERROR_CODES:
                codes = FRAME_ERROR_CODES[error.cause]
                code = codes[0] if self.version == V16 else codes[1]
                ctx.count("callerrors_sent")
                await self._send(call_error_frame(
                    readable_message_id(raw_msg), code, "Malformed OCPP-J frame", {"cause": error.cause}
                ))
            return  # a broken CALLRESULT/CALLERROR has nobody to answer
        if frame.kind == CALL:
            message = Call(frame.message_id, frame.action, frame.payload)
            try:
                await self._answer(message, received)
            except OCPPError as error:
                ctx.count("callerrors_sent")
                ctx.decode_error(f"callerror_{error.code}", str(error.details.get("cause", ""))[:120],
                                 charge_point=self.id)
                cause = error.details.get("cause", "") if isinstance(error.details, dict) else ""
                await self._send(call_error_frame(
                    frame.message_id, error_code(self.version, error.code),
                    error.description or "", {"cause": str(cause)[:200]},
                ))
        elif frame.kind == CALLRESULT:
            self._response_queue.put_nowait(CallResult(frame.message_id, frame.payload))
        else:
            code, description, details = frame.payload
            self._response_queue.put_nowait(CallError(frame.message_id, code, description, details))

    async def _answer(self, message: Call, received: float) -> None:
        if message.action not in self.route_map:
            # Known to this version but not handled here -> NotSupported; unknown -> NotImplemented.
            if message.action in self.known_actions:
                raise _NotSupported(details={"cause": f"{message.action} is not handled by the gateway"})
            raise _NotImplemented(details={"cause": f"{message.action} is not an OCPP {self.version} action"})
        await self._dispatch(message)
        self.mirror.on_call(message.action, message.payload, received)

    async def _dispatch(self, message: Call) -> None:
        """The package's `_handle_call`, minus two costs that dominate per frame:
        - validation runs on the loop, not in a thread (`validate_payload` hops to an executor;
          under the GIL the hop only adds latency), using the package's own schemas and
          error mapping;
        - handlers get the wire payload as one dict instead of snake_case keyword arguments
          (the package converts every key of a MeterValues with regexes first).
        """
        handlers = self.route_map[message.action]
        validate = not handlers.get("_skip_schema_validation", False)
        if validate:
            _validate_payload(message, self._ocpp_version)
        try:
            answer = handlers["_on_action"](message.payload)
        except Exception as error:  # a handler bug answers InternalError, the session goes on
            self.ctx.log.warning("OCPP handler failed", action=message.action,
                                 error=f"{type(error).__name__}: {error}"[:200])
            raise _InternalError(details={"cause": type(error).__name__}) from error
        payload = snake_to_camel_case(remove_nones(serialize_as_dict(answer)))
        result = message.create_call_result(payload)
        if validate:
            _validate_payload(result, self._ocpp_version)
        await self._send(result.to_json())

    def now(self) -> str:
        return utc_now(self.ctx.clock)

    @classmethod
    def next_transaction_id(cls) -> int:
        return next(cls._transaction_ids)


class _InternalError(OCPPError):
    code = "InternalError"
    default_description = "An internal error occurred and the receiver was not able to process the Action"


class _NotImplemented(OCPPError):
    code = "NotImplemented"
    default_description = "Requested Action is not known by receiver"


class _NotSupported(OCPPError):
    code = "NotSupported"
    default_description = "Requested Action is recognized but not supported by the receiver"


class Session16(_Session, ChargePoint16):
    version = V16
    known_actions = frozenset(a.value for a in Action16)

    @on(Action16.boot_notification)
    def on_boot_notification(self, payload: dict[str, Any]) -> result16.BootNotification:
        return result16.BootNotification(
            current_time=self.now(), interval=self.heartbeat_interval, status="Accepted"
        )

    @on(Action16.heartbeat)
    def on_heartbeat(self, payload: dict[str, Any]) -> result16.Heartbeat:
        return result16.Heartbeat(current_time=self.now())

    @on(Action16.status_notification)
    def on_status_notification(self, payload: dict[str, Any]) -> result16.StatusNotification:
        return result16.StatusNotification()

    @on(Action16.meter_values)
    def on_meter_values(self, payload: dict[str, Any]) -> result16.MeterValues:
        return result16.MeterValues()

    @on(Action16.authorize)
    def on_authorize(self, payload: dict[str, Any]) -> result16.Authorize:
        # The gateway only observes: every id tag may charge (an operator CSMS decides otherwise).
        return result16.Authorize(id_tag_info={"status": "Accepted"})

    @on(Action16.start_transaction)
    def on_start_transaction(self, payload: dict[str, Any]) -> result16.StartTransaction:
        transaction_id = self.next_transaction_id()
        self.mirror.bind_transaction(transaction_id, payload["connectorId"])
        return result16.StartTransaction(
            transaction_id=transaction_id, id_tag_info={"status": "Accepted"}
        )

    @on(Action16.stop_transaction)
    def on_stop_transaction(self, payload: dict[str, Any]) -> result16.StopTransaction:
        return result16.StopTransaction()

    @on(Action16.data_transfer)
    def on_data_transfer(self, payload: dict[str, Any]) -> result16.DataTransfer:
        return result16.DataTransfer(status="UnknownVendorId")

    @on(Action16.firmware_status_notification)
    def on_firmware_status(self, payload: dict[str, Any]) -> result16.FirmwareStatusNotification:
        return result16.FirmwareStatusNotification()

    @on(Action16.diagnostics_status_notification)
    def on_diagnostics_status(self, payload: dict[str, Any]) -> result16.DiagnosticsStatusNotification:
        return result16.DiagnosticsStatusNotification()

    def trigger(self, message: str) -> Any:
        return call16.TriggerMessage(requested_message=message)


class Session201(_Session, ChargePoint201):
    version = V201
    known_actions = frozenset(a.value for a in Action201)

    @on(Action201.boot_notification)
    def on_boot_notification(self, payload: dict[str, Any]) -> result201.BootNotification:
        return result201.BootNotification(
            current_time=self.now(), interval=self.heartbeat_interval, status="Accepted"
        )

    @on(Action201.heartbeat)
    def on_heartbeat(self, payload: dict[str, Any]) -> result201.Heartbeat:
        return result201.Heartbeat(current_time=self.now())

    @on(Action201.status_notification)
    def on_status_notification(self, payload: dict[str, Any]) -> result201.StatusNotification:
        return result201.StatusNotification()

    @on(Action201.meter_values)
    def on_meter_values(self, payload: dict[str, Any]) -> result201.MeterValues:
        return result201.MeterValues()

    @on(Action201.transaction_event)
    def on_transaction_event(self, payload: dict[str, Any]) -> result201.TransactionEvent:
        return result201.TransactionEvent()

    @on(Action201.authorize)
    def on_authorize(self, payload: dict[str, Any]) -> result201.Authorize:
        return result201.Authorize(id_token_info={"status": "Accepted"})

    @on(Action201.notify_event)
    def on_notify_event(self, payload: dict[str, Any]) -> result201.NotifyEvent:
        return result201.NotifyEvent()

    @on(Action201.security_event_notification)
    def on_security_event(self, payload: dict[str, Any]) -> result201.SecurityEventNotification:
        return result201.SecurityEventNotification()

    @on(Action201.firmware_status_notification)
    def on_firmware_status(self, payload: dict[str, Any]) -> result201.FirmwareStatusNotification:
        return result201.FirmwareStatusNotification()

    def trigger(self, message: str) -> Any:
        return call201.TriggerMessage(requested_message=message)


SESSIONS: dict[str, Any] = {"ocpp1.6": Session16, "ocpp2.0.1": Session201}


async def poll(session: Any, mirror: Mirror, interval: float) -> None:
    """Ask a quiet charge point for its status and meter values, one CALL at a time.

    TriggerMessage (1.6 section 5.17, 2.0.1 F06). The package's `call()` holds a lock until the
    answer (or the timeout), which is the spec's "one outstanding CALL per connection" rule.
    """
    meter_actions = ("MeterValues", "StopTransaction", "TransactionEvent")
    while True:
        await asyncio.sleep(interval)
        now = session.ctx.clock()
        wanted = []
        if now - mirror.last_report.get("StatusNotification", 0.0) >= interval:
            wanted.append("StatusNotification")
        if all(now - mirror.last_report.get(a, 0.0) >= interval for a in meter_actions):
            wanted.append("MeterValues")
        for message in wanted:
            try:
                await session.call(session.trigger(message), suppress=True)
                session.ctx.count("triggers_sent")
            except TimeoutError:
                session.ctx.count("trigger_timeouts")
