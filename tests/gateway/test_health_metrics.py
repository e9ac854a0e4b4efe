"""/metrics is assembled from the components' own collectors (gateway/metrics.py): a running
gateway exports exactly the names docs/metrics.md lists, families several components share come
out once, a reload swaps the parts' collectors without a duplicate or a reset, and the run
summary and the status read the same figures the components counted."""

from __future__ import annotations

import asyncio
import re
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_config
from gateway.driver import DriverContext
from gateway.metrics import MetricsRegistry, read_samples
from gateway.runtime import Gateway
from tests.gateway.test_reload import config_text, write_replay
from tests.gateway.test_status_page import READINGS, make_gateway, started
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.timeout(120)

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
DOC_ROW = re.compile(r"^\| `((?:edge_gateway|process)_[a-z0-9_<>*]+)` \| *(counter|gauge|info|histogram)? *\|")


def documented() -> dict[str, str | None]:
    """name (as exposed, `_total` and `_info` included) -> type, from docs/metrics.md."""
    section = DOC.read_text(encoding="utf-8").split("## The gateway's own metrics", 1)[1]
    return {m[1]: m[2] for line in section.splitlines() if (m := DOC_ROW.match(line))}


def exposed(text: str) -> dict[str, str]:
    """Family name as a scraper sees it -> type; fails on a family declared twice."""
    types = re.findall(r"^# TYPE (\S+) (\w+)$", text, re.M)
    assert len(types) == len({name for name, _ in types}), "a family declared twice"
    out = {}
    for name, kind in types:
        suffix = {"counter": "_total", "info": "_info"}.get(kind, "")
        out[name if name.endswith(suffix) else name + suffix] = "info" if kind == "gauge" and name.endswith(
            "_info") else kind
    return out


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


def context(name: str, tmp_path: Path) -> DriverContext:
    return DriverContext(name, gateway_id="gw", state_dir=tmp_path / name, submit=lambda r: None,
                         submit_event=lambda e: None)


async def test_a_running_gateway_exports_exactly_the_documented_names(tmp_path: Path) -> None:
    gateway, base = make_gateway(tmp_path, broken_driver=True)
    task = await started(gateway, READINGS)
    try:
        # a driver's own counter kind: one family per kind besides the all-kinds family
        gateway.supervisors[0].ctx.count("port_lost")
        text = await asyncio.to_thread(scrape, base + "/metrics")
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, timeout=20)
    names = exposed(text)
    docs = documented()
    patterns = {re.compile("^" + re.escape(n).replace("<kind>", "[a-z0-9_]+").replace(r"\*", ".+") + "$"): t
                for n, t in docs.items() if "<kind>" in n or "*" in n}
    fixed = {n: t for n, t in docs.items() if "<kind>" not in n and "*" not in n}
    # remote config off: its family is the one documented name this gateway has no reason to show
    assert set(fixed) - set(names) == {"edge_gateway_remote_configs_total"}
    for name, kind in names.items():
        if name in fixed:
            assert fixed[name] == kind, name
        else:
            assert any(p.match(name) for p in patterns), f"{name} is exported but not in docs/metrics.md"
    assert "edge_gateway_driver_event_port_lost_total" in names
    assert 'edge_gateway_driver_event_port_lost_total{driver="park"} 1.0' in text
    # one sample per driver in a family both drivers describe
    assert re.findall(r'^edge_gateway_readings_total\{driver="(\w+)"\} (\S+)$', text, re.M) == [
        ("park", f"{READINGS}.0"), ("harbour", "0.0")]


async def test_summary_status_and_metrics_show_what_the_components_counted(tmp_path: Path) -> None:
    gateway, base = make_gateway(tmp_path, broken_driver=True)
    task = await started(gateway, READINGS)
    try:
        status = gateway.status_board.status()
    finally:
        gateway.request_stop()
        summary = await asyncio.wait_for(task, timeout=20)
    park, harbour = (s.ctx for s in gateway.supervisors)
    runner = gateway.runners[0]
    assert (summary.readings, summary.decode_errors) == (READINGS, 1) == (park.readings, sum(park.decode_errors.values()))
    assert summary.windows_closed == gateway.aggregator.stats.closed
    assert summary.batches_written == gateway.outbox.stats.batches_written >= 1
    assert summary.batches_forwarded == {"file": runner.forwarded_batches}
    assert summary.records_forwarded == {"file": runner.forwarded_records}
    assert summary.outbox_batches == gateway.outbox.stats.batches
    assert [(d["name"], d["readings"], d["decode_errors"], d["up"]) for d in status["drivers"]] == [
        ("park", READINGS, 1, True), ("harbour", 0, 0, False)]
    assert status["drivers"][1]["restarts"] == gateway.supervisors[1].restarts >= 1
    assert harbour.readings == 0


def test_the_registry_merges_shared_families_and_swaps_parts_in_one_step(tmp_path: Path) -> None:
    registry = MetricsRegistry()
    a, b = context("a", tmp_path), context("b", tmp_path)
    a.count("port_lost", 2)
    b.count("port_lost")
    registry.register(a.metrics)
    registry.register(b.metrics)
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert [(s.labels, s.value) for s in families["edge_gateway_driver_event_port_lost"].samples
            if s.name.endswith("_total")] == [({"driver": "a"}, 2.0), ({"driver": "b"}, 1.0)]
    assert text.count("# TYPE edge_gateway_readings_total counter") == 1

    # a reload replaces a's collector by its successor's while another thread scrapes: every
    # scrape sees one `a` and one `b`, never none and never two
    seen: list[list[str]] = []
    stop = threading.Event()

    def scraper() -> None:
        while not stop.is_set():
            samples = read_samples(registry)["edge_gateway_readings_total"]
            seen.append(sorted(labels["driver"] for labels, _ in samples))

    thread = threading.Thread(target=scraper)
    thread.start()
    current = a
    try:
        for _ in range(300):
            successor = context("a", tmp_path)
            registry.replace([current.metrics], [successor.metrics])
            current = successor
    finally:
        stop.set()
        thread.join(10)
    assert seen and all(drivers == ["a", "b"] for drivers in seen)
    # the successor took its predecessor's place: samples keep the drivers' order
    assert [labels["driver"] for labels, _ in read_samples(registry)["edge_gateway_readings_total"]] == ["a", "b"]
    registry.unregister(b.metrics)
    assert [labels for labels, _ in read_samples(registry)["edge_gateway_readings_total"]] == [{"driver": "a"}]


async def test_a_reload_keeps_each_part_once_on_metrics_with_its_counts(tmp_path: Path) -> None:
    for name in ("load", "second"):
        write_replay(tmp_path / f"{name}.jsonl", f"test:{name}/1")
    path = tmp_path / "gateway.toml"
    path.write_text(config_text(tmp_path, drivers=["load"]))
    gateway = Gateway(load_config(path))
    task = asyncio.create_task(gateway.run(duration=60))
    try:
        await async_wait_for(lambda: gateway.supervisors and gateway.runners
                             and gateway.runners[0].forwarded_batches >= 2, timeout=20, what="batches forwarded")
        forwarded = gateway.runners[0].forwarded_batches
        # the driver added, the file uplink restarted with another setting, a second uplink added
        path.write_text(config_text(tmp_path, drivers=["load", "second"], uplinks="""max_in_flight = 4
[[uplinks]]
type = "file"
name = "copy"
directory = "copy"
"""))
        result = await gateway.reload()
        assert result.result == "applied"
        samples = read_samples(gateway.registry)

        def labels_of(name: str, label: str) -> list[str]:
            return [labels[label] for labels, _ in samples[name]]

        assert labels_of("edge_gateway_readings_total", "driver") == ["load", "second"]
        assert labels_of("edge_gateway_driver_up", "driver") == ["load", "second"]
        assert labels_of("edge_gateway_uplink_forwarded_batches_total", "uplink") == ["file", "copy"]
        assert labels_of("edge_gateway_uplink_backlog_batches", "uplink") == ["file", "copy"]
        # the restarted uplink's count carried over: Prometheus sees no reset
        restarted = dict((labels["uplink"], value) for labels, value in
                         samples["edge_gateway_uplink_forwarded_batches_total"])
        assert restarted["file"] >= forwarded
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, timeout=30)
