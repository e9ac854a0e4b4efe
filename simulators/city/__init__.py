"""City in a box: every simulator sized from a scenario file, the real gateway, faults on a
timetable and an end-to-end loss report (`edge-gateway-sim city`)."""

from simulators.city.scenario import Scenario, load_scenario, parse_scenario

__all__ = ["Scenario", "load_scenario", "parse_scenario"]
