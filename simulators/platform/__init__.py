"""The central platform's side of the MQTT contract: a receiver that proves nothing is lost."""

from simulators.platform.ledger import Accounted, Ledger

__all__ = ["Accounted", "Ledger", "PlatformReceiver"]


def __getattr__(name: str) -> object:
    # The receiver imports paho; the ledger alone (tests, offline report checks) does not.
    if name == "PlatformReceiver":
        from simulators.platform.receiver import PlatformReceiver

        return PlatformReceiver
    raise AttributeError(name)
