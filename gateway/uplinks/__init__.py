"""Uplinks turn outbox batches into acknowledged writes at the central platform."""

from gateway.uplinks.base import Uplink, UplinkContext, UplinkSettings

__all__ = ["Uplink", "UplinkContext", "UplinkSettings"]
