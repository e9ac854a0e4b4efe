"""dashboards/: the alert rules pass `promtool check rules`, and every metric the dashboard and
the rules query is one a running gateway really exports."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.gateway.test_status_page import make_gateway, started

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dashboards" / "alerts.yml"
DASHBOARD = ROOT / "dashboards" / "edge-gateway.json"
NAME = re.compile(r"\b((?:edge_gateway|process)_[a-z0-9_]+)\b")


def queried_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), str)]
    exprs += re.findall(r"^\s+expr: (.+)$", RULES.read_text(), re.M)
    return set().union(*(NAME.findall(e) for e in exprs))


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool missing: install Debian's prometheus package")
def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout + result.stderr


def test_rules_cover_the_agreed_alerts() -> None:
    alerts = re.findall(r"- alert: (\w+)", RULES.read_text())
    for wanted in ("EdgeGatewayDown", "EdgeGatewayUplinkBacklogGrowing", "EdgeGatewayDriverSilent",
                   "EdgeGatewayOutboxEvicting", "EdgeGatewayDecodeErrorSpike"):
        assert wanted in alerts


async def test_every_queried_metric_is_exported(tmp_path: Path) -> None:
    gateway, base = make_gateway(tmp_path)
    task = await started(gateway, 7)
    try:
        with await asyncio.to_thread(urllib.request.urlopen, base + "/metrics", timeout=10) as answer:
            text = answer.read().decode()
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, timeout=20)
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    # families without a sample yet (no decode error so far) are declared by their TYPE line
    exported |= {name + ("_total" if kind == "counter" else "")
                 for name, kind in re.findall(r"^# TYPE (\S+) (\w+)$", text, re.M)}
    wanted = queried_names()
    assert len(wanted) >= 15, wanted
    assert wanted <= exported, sorted(wanted - exported)
