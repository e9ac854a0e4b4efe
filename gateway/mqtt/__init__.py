"""MQTT client code shared by the gateway's inputs and uplinks.

- `tls`: one TLS context builder whose errors name the file at fault (`TlsFileError`).
- `pollloop`: paho's network loop waiting in poll(2), for descriptors of 1024 and more.
- `subscriber`: the subscriber drivers take MQTT input with (`MqttSubscriber`, on gmqtt):
  TLS, credentials, persistent session, QoS 1; no reconnection of its own (the runtime's
  driver supervisor restarts the driver with backoff).

`subscriber` imports gmqtt: import it only where a driver uses MQTT input.
"""

from gateway.mqtt.tls import TlsFileError, tls_context

__all__ = ["TlsFileError", "tls_context"]
