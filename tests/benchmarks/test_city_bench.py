"""benchmarks.city refuses, before running anything, a scale whose charge-point sockets would
not fit under the descriptor limit the gateway inherits, with one line giving both figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.city import descriptor_refusal, descriptors_needed
from simulators.city.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]


def test_the_need_counts_a_socket_per_charge_point_and_five_per_serial_port() -> None:
    reference = load_scenario(ROOT / "config/scenarios/reference.toml")
    assert descriptors_needed(reference.scaled(50)) == 23_400 + 5 * 16 * 50 + 300
    assert descriptor_refusal(reference, 35, 20_000) == ""
    line = descriptor_refusal(reference, 50, 20_000)
    assert line.startswith("scale 50 not run: the gateway would need ~27,700 descriptors (23,400 charge-point")
    assert "RLIMIT_NOFILE is 20,000" in line


def test_a_scale_over_the_limit_is_refused_up_front_in_one_line() -> None:
    # the hard limit is lowered for the child, so the refusal does not depend on this machine's
    done = subprocess.run(
        [sys.executable, "-c",
         "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096)); "
         "from benchmarks.city import main; sys.exit(main(['--scales', '1,10']))"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""  # nothing ran, not even scale 1
    assert done.stderr.splitlines() == [
        "benchmarks.city: scale 10 not run: the gateway would need ~5,780 descriptors (4,680 charge-point "
        "sockets, 160 serial ports, ~300 others) and RLIMIT_NOFILE is 4,096 (the hard limit; raising it "
        "needs CAP_SYS_RESOURCE)"]
