"""edge-gateway's side of `benchmarks.peer`: its config and its command line."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.peer_support.thingsboard import INPUT_TOPIC_FILTER

__all__ = ["GATEWAY_ID", "edge_command", "edge_config"]

GATEWAY_ID = "peer-bench"


def edge_config(state_dir: Path, *, input_port: int, upstream_port: int, window: int,
                grace: float, host: str = "127.0.0.1") -> str:
    """lorawan driver in network-server mode on the input broker (ChirpStack v4, the network
    server's decoded object used as is), windows, the SQLite outbox, the MQTT uplink to the
    upstream broker. Log level as the peer's (warning); no metrics endpoint."""
    return f"""\
[gateway]
id = "{GATEWAY_ID}"
state_dir = "{state_dir}"

[windows]
window = {window}
grace = {grace}

[health]
listen = ""

[log]
level = "warning"
format = "json"

[[drivers]]
type = "lorawan"
name = "chirpstack"
mode = "network_server"
mqtt_host = "{host}"
mqtt_port = {input_port}
mqtt_client_id = "edge-gateway-peer-bench"
mqtt_topics = ["{INPUT_TOPIC_FILTER}"]
format = "chirpstack_v4"

[[uplinks]]
type = "mqtt"
host = "{host}"
port = {upstream_port}
"""


def edge_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "run", "--config", str(config), "--drain"]
