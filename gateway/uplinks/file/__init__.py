"""Uplink `file`: batches in the state directory (gzip members of JSON lines by default),
rotated by size: the embedded default, needing no server. `config` holds its Config, `uplink`
the writer."""

from __future__ import annotations

from gateway.uplinks.file.config import Config
from gateway.uplinks.file.uplink import FileUplink

__all__ = ["Config", "FileUplink", "load_uplink"]


def load_uplink() -> type[FileUplink]:
    return FileUplink
