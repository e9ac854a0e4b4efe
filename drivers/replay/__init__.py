"""Driver `replay`: plays recorded readings from a JSON Lines or CSV file (optionally gzipped)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.replay.config import Config

if TYPE_CHECKING:
    from drivers.replay.driver import ReplayDriver

__all__ = ["Config", "load_driver"]


def load_driver() -> type[ReplayDriver]:
    from drivers.replay.driver import ReplayDriver

    return ReplayDriver
