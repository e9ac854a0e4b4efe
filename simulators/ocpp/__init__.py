"""Simulated OCPP charge points (1.6J / 2.0.1) and a CSMS stand-in, over real WebSockets."""

from simulators.ocpp.csms import CsmsStandIn
from simulators.ocpp.fleet import Expected, Fleet, FleetConfig, SimChargePoint

__all__ = ["CsmsStandIn", "Expected", "Fleet", "FleetConfig", "SimChargePoint"]
