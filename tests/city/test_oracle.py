"""The loss report's oracle counts what the simulated devices meant to send (their own record of
the measurements they encoded), not what the gateway's decoders make of the frames: a decoder
that drops a measurement on purpose must show up as unexplained, not balance the books."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from simulators.city.runner import CityRun, RunOptions
from simulators.city.scenario import parse_scenario

# Loaded by the gateway process only (PYTHONPATH is set for the processes the runner starts):
# the Elsys codec forgets its CO2 reading.
BROKEN_DECODER = '''
from drivers.lorawan import codecs

_real = codecs.CODECS["elsys"]


def _without_co2(payload, fport=None):
    return [m for m in _real(payload, fport) if m.metric != "co2"]


codecs.CODECS["elsys"] = _without_co2
'''
READINGS_PER_FRAME = 8  # the simulated Elsys encodes 6 measurements; rssi and snr come with it


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_decoder_dropping_a_measurement_is_unexplained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BROKEN_DECODER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p))
    scenario = parse_scenario({
        "city": {"name": "oracle", "duration": 6.0, "window": 2, "grace": 0.5, "uplink": "file"},
        "lorawan": [{"count": 3, "interval": 1.0, "families": ["elsys"], "gateways": 1}],
    })
    report = await CityRun(scenario, 1, RunOptions(workdir=tmp_path / "city", progress=False)).run()
    line = report["protocols"]["lorawan-udp"]
    frames = line["sent"] // READINGS_PER_FRAME
    # a lower bound: how many frames 6 s of pacing sends is the clock's; per frame it is exact
    assert frames > 0 and line["sent"] == frames * READINGS_PER_FRAME
    assert line["covered"] == frames * (READINGS_PER_FRAME - 1)
    assert line["unexplained"] == frames  # one CO2 reading per frame, named by nothing
