"""Per-charge-point bookkeeping that turns decoded CALLs into readings and priority events.

Shared by the endpoint sessions and the proxy: both hand it the wire payloads (camelCase dicts).
It remembers which connector/EVSE each transaction runs on (1.6 StopTransaction and later 2.0.1
TransactionEvents do not repeat it) and the last status per device, so a priority event fires on
a *change* to Faulted or Unavailable only.
"""

from __future__ import annotations

from typing import Any

from drivers.ocpp.decode import (
    V16,
    V201,
    OcppDecodeError,
    decode_call,
    status_event,
    transaction_unit,
)
from gateway.driver import DriverContext

__all__ = ["Mirror"]

# Transactions remembered per charge point at most; a misbehaving charge point that opens
# transactions forever cannot grow the gateway's memory without bound.
_MAX_TRANSACTIONS = 64


class Mirror:
    __slots__ = ("ctx", "charge_point", "version", "transactions", "last_status", "last_report", "changed")

    def __init__(self, ctx: DriverContext, charge_point: str, version: str) -> None:
        self.ctx = ctx
        self.charge_point = charge_point
        self.version = version
        self.transactions: dict[str, str] = {}
        self.changed = False  # the transaction map changed since it was last persisted
        self.last_status: dict[str, str] = {}
        # Receive time of the last StatusNotification / meter data (for polling decisions).
        self.last_report: dict[str, float] = {}

    def bind_transaction(self, transaction_id: Any, unit: Any) -> None:
        key, value = str(transaction_id), str(unit)
        if self.transactions.get(key) == value:
            return
        if len(self.transactions) >= _MAX_TRANSACTIONS:
            self.transactions.pop(next(iter(self.transactions)))
        self.transactions[key] = value
        self.changed = True

    def on_call(self, action: str, payload: Any, received: float) -> None:
        """Mirror one CALL from the charge point into readings (never raises on field data)."""
        ctx = self.ctx
        if self.version == V201 and action == "TransactionEvent":
            self._track_201(payload)
        try:
            readings = decode_call(
                self.version, self.charge_point, action, payload, received, self.transactions
            )
        except OcppDecodeError as error:
            ctx.decode_error(error, charge_point=self.charge_point)
            return
        finally:
            if action in ("StatusNotification", "MeterValues", "TransactionEvent",
                          "StartTransaction", "StopTransaction"):
                self.last_report[action] = received
        for reading in readings:
            if reading.metric == "connector_status":
                previous = self.last_status.get(reading.device)
                self.last_status[reading.device] = str(reading.value)
                event = status_event(reading, previous, self._status_detail(payload))
                if event is not None:
                    ctx.event(event)
            ctx.emit(reading)
        # A finished transaction is forgotten once its own meter values were mirrored.
        if not isinstance(payload, dict):
            return
        if self.version == V16 and action == "StopTransaction":
            self._forget(payload.get("transactionId"))
        elif action == "TransactionEvent" and payload.get("eventType") == "Ended":
            info = payload.get("transactionInfo")
            if isinstance(info, dict):
                self._forget(info.get("transactionId"))

    def _forget(self, transaction_id: Any) -> None:
        if self.transactions.pop(str(transaction_id), None) is not None:
            self.changed = True

    def on_result(self, action: str, request: Any, response: Any) -> None:
        """A CALLRESULT the CSMS sent for one of the charge point's CALLs (proxy mode)."""
        if self.version == V16 and action == "StartTransaction":
            try:
                self.bind_transaction(response["transactionId"], int(request["connectorId"]))
            except (KeyError, TypeError, ValueError):
                self.ctx.decode_error(
                    OcppDecodeError("malformed_payload", "StartTransaction result"),
                    charge_point=self.charge_point,
                )

    def _track_201(self, payload: Any) -> None:
        try:
            unit = transaction_unit(payload)
            transaction_id = payload["transactionInfo"]["transactionId"]
        except (KeyError, TypeError, ValueError):
            return  # decode_call reports the malformed payload
        if unit is not None:
            self.bind_transaction(transaction_id, unit)

    def _status_detail(self, payload: Any) -> dict[str, str]:
        detail = {"charge_point": self.charge_point}
        if isinstance(payload, dict):
            for key in ("errorCode", "info", "vendorErrorCode"):
                value = payload.get(key)
                if isinstance(value, str) and value:
                    detail[key] = value[:64]
        return detail
