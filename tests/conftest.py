from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.mosquitto import Broker

# Bounded hypothesis effort: the whole suite must stay well inside CI's time on 2 cores.
settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A plain anonymous broker on a free loopback port."""
    broker = Broker(workdir=tmp_path).start()
    try:
        yield broker
    finally:
        broker.stop()
