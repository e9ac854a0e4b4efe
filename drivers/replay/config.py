"""The `replay` driver's config table ([[drivers]] type = "replay"), validated when the
config is read; the keys are documented in README.md beside this file."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.driver import DriverSettings

__all__ = ["Config"]


class Config(DriverSettings):
    # JSON Lines ({"device","metric","value","ts"} per line) or CSV with that header; ".gz" ok.
    path: str
    # 1.0 plays at the recorded pace, 60 sixty times faster, 0 as fast as possible.
    speed: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    # replayed: a reading's event time is the moment it is played (the file sets the pace);
    # original: keep the recorded timestamps (a logger's backfill: old ones are late and counted).
    timestamps: Literal["replayed", "original"] = "replayed"
    # Start again from the top when the file ends (a demo that runs until stopped).
    loop: bool = False

    def validate(self) -> list[str]:
        if not self.path.endswith((".jsonl", ".jsonl.gz", ".csv", ".csv.gz")):
            return [f"path: expected a .jsonl or .csv file (optionally .gz), found {self.path!r}"]
        return []
