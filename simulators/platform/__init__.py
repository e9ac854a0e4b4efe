"""The central platform's side of the MQTT contract: a receiver that proves nothing is lost."""

from simulators.platform.ledger import Ledger

__all__ = ["Ledger", "PlatformReceiver"]


def __getattr__(name: str) -> object:
    # The receiver imports paho; the ledger alone (tests, offline report checks) does not.
    if name == "PlatformReceiver":
        from simulators.platform.receiver import PlatformReceiver

        return PlatformReceiver
    raise AttributeError(name)
