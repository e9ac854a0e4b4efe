"""InfluxDB line-protocol uplink settings (`type = "influxdb"`); the writer is `writer` beside it.

Config validation imports only this module; influxdb-client loads when the uplink starts.

Sample (InfluxDB 2.x / 3.x, or VictoriaMetrics which ignores org, bucket and token):

    [[uplinks]]
    type = "influxdb"
    url = "https://influx.example.net:8086"
    org = "city"
    bucket = "climate"
    token = "..."
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.uplinks.base import UplinkSettings

__all__ = ["Config"]


class Config(UplinkSettings, kw_only=True, forbid_unknown_fields=True):
    type: str = "influxdb"
    # Base URL of the server; the write goes to <url>/api/v2/write.
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")] = "http://localhost:8086"
    # InfluxDB 2 organisation and bucket (query parameters of the write).
    org: str = ""
    bucket: Annotated[str, msgspec.Meta(min_length=1)] = "edge"
    # API token, sent as "Authorization: Token <token>"; "" sends no Authorization header.
    token: str = ""
    # Compress request bodies with gzip (Content-Encoding: gzip).
    gzip: bool = True
    # Seconds for one HTTP write (connect + answer).
    timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0
    # CA bundle for an https url ("" uses the system store).
    ca_file: str = ""
    # Prefix put before every measurement name (the metric), e.g. "edge_".
    measurement_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_]*$")] = ""
    # Extra tags written on every point, e.g. {site = "harbour"}.
    tags: dict[str, str] = msgspec.field(default_factory=dict)

    def validate(self) -> list[str]:
        problems: list[str] = []
        reserved = {"gateway", "device", "name", "severity", "metric"} & set(self.tags)
        if reserved:
            problems.append(
                f"tags: expected no tag the uplink writes itself, found {sorted(reserved)}"
            )
        if self.ca_file and not self.url.startswith("https://"):
            problems.append(f"ca_file: expected an https:// url with it, found {self.url!r}")
        return problems
