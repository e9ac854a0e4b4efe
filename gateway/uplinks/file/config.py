"""The file uplink's config table ([[uplinks]] type = "file")."""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.uplinks.base import UplinkSettings

__all__ = ["Config"]


class Config(UplinkSettings):
    # Output folder; relative paths are inside the gateway's state_dir.
    directory: str = "batches"
    # The current file is rotated to batches-<n>.jsonl when it would grow past this many bytes.
    rotate_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 16 * 1024 * 1024
    # Rotated files kept; the oldest beyond this are deleted.
    keep_files: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 8
    # fsync after each batch: off by default to spare the SD card (the outbox is the durable copy).
    fsync: bool = False
    # Write batches gzip-compressed as stored (batches.jsonl.gz); false writes plain JSON Lines.
    gzip: bool = True
