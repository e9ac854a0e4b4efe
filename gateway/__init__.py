"""edge-gateway core: readings, event-time windows, durable outbox, uplinks, runtime."""

__version__ = "0.1.0"
__all__ = ["__version__"]
