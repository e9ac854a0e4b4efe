from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from drivers.lorawan import Config
from gateway.driver import DriverContext
from gateway.model import Event, Reading


class Collected:
    def __init__(self, state_dir: Path) -> None:
        self.readings: list[Reading] = []
        self.events: list[Event] = []
        self.state_dir = state_dir

    def context(self) -> DriverContext:
        return DriverContext("lora", gateway_id="gw-test", state_dir=self.state_dir,
                             submit=self.readings.append, submit_event=self.events.append, logger=self)

    # the context's logger: records warnings so tests can check "logged once per cause"
    def warning(self, message: str, **fields: Any) -> None:
        self.warnings.append((message, fields))

    def info(self, message: str, **fields: Any) -> None:
        pass

    @property
    def warnings(self) -> list[tuple[str, dict[str, Any]]]:
        return self.__dict__.setdefault("_warnings", [])


def make_config(**raw: Any) -> Config:
    return msgspec.convert({"type": "lorawan", "name": "lora", **raw}, Config, strict=True)


@pytest.fixture
def collected(tmp_path: Path) -> Collected:
    return Collected(tmp_path / "state")
