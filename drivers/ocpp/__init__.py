"""Driver `ocpp`: an OCPP 1.6J / 2.0.1 WebSocket endpoint for charge points, or a transparent
proxy between them and the operator's CSMS, mirroring connector status and meter values into
readings. See README.md for every key and how the proxy behaves when the CSMS is unreachable."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.ocpp.config import Config

if TYPE_CHECKING:
    from drivers.ocpp.driver import OcppDriver

__all__ = ["Config", "load_driver"]


def load_driver() -> type[OcppDriver]:
    from drivers.ocpp.driver import OcppDriver

    return OcppDriver
