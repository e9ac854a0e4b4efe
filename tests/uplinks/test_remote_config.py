"""Remote configuration over a real Mosquitto: pushed configs applied, rejected or rolled back,
each result on `<prefix>/<gateway>/config/result` and on disk, nothing lost from the outbox
(gateway/remote_config.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.reload import config_from_text
from gateway.runtime import Gateway
from tests.gateway.test_reload import windows_delivered, write_replay
from tests.support.mosquitto import Broker
from tests.support.wait import async_wait_for

GATEWAY = "gw-remote"


def gateway_toml(tmp_path: Path, port: int, *, drivers: dict[str, str], extra: str = "") -> str:
    tables = "".join(f'\n[[drivers]]\ntype = "replay"\nname = "{name}"\npath = "{path}"\nloop = true\n'
                     for name, path in drivers.items())
    return f"""
[gateway]
id = "{GATEWAY}"
state_dir = "{tmp_path / 'state'}"
[windows]
window = 1
grace = 0.1
checkpoint = 0.2
[outbox]
commit_interval = 0.05
[health]
listen = ""
[runtime]
restart_backoff_initial = 0.05
restart_backoff_max = 0.2
[remote_config]
enabled = true
public_key_file = "{tmp_path / 'platform.pub'}"
health_timeout = 3.0
{extra}
{tables}
[[uplinks]]
type = "file"
name = "file"
[[uplinks]]
type = "mqtt"
name = "mqtt"
host = "127.0.0.1"
port = {port}
"""


class Platform:
    """The platform's side: pushes envelopes (retained, QoS 1), collects the results."""

    def __init__(self, port: int, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.results: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="platform")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"edge/{GATEWAY}/config/result", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.results.append(json.loads(message.payload))

    def push(self, config_id: str, text: str, *, sign: bool = True, key: Ed25519PrivateKey | None = None) -> None:
        envelope: dict[str, str] = {"id": config_id, "config": text}
        if sign:
            envelope["signature"] = base64.b64encode((key or self.key).sign(text.encode())).decode()
        self.client.publish(f"edge/{GATEWAY}/config", json.dumps(envelope), qos=1, retain=True).wait_for_publish(5)

    def push_raw(self, payload: bytes) -> None:
        self.client.publish(f"edge/{GATEWAY}/config", payload, qos=1, retain=True).wait_for_publish(5)

    def result(self, config_id: str) -> dict[str, Any] | None:
        with self._lock:
            return next((r for r in self.results if r["id"] == config_id), None)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def test_pushed_configs_applied_rejected_rolled_back_and_nothing_lost(
    tmp_path: Path, mosquitto: Broker
) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "platform.pub").write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    load = write_replay(tmp_path / "load.jsonl", "test:load/1")
    second = write_replay(tmp_path / "second.jsonl", "test:second/1")
    local = tmp_path / "gateway.toml"
    local.write_text(gateway_toml(tmp_path, mosquitto.port, drivers={"load": str(load)}))
    gateway = Gateway(load_config(local))
    task = asyncio.create_task(gateway.run(duration=180, drain=True))
    platform = await asyncio.to_thread(Platform, mosquitto.port, key)
    try:
        await async_wait_for(lambda: gateway.runners and gateway.runners[1].forwarded_batches >= 2, timeout=20)

        async def outcome(config_id: str) -> dict[str, Any]:
            await async_wait_for(lambda: platform.result(config_id), timeout=30, what=config_id)
            result = platform.result(config_id)
            assert result is not None
            return result

        # a good one: a driver added
        good = gateway_toml(tmp_path, mosquitto.port, drivers={"load": str(load), "second": str(second)})
        platform.push("good-1", good)
        result = await outcome("good-1")
        assert (result["result"], result["reasons"], result["changes"]) == ("applied", [], {"drivers_added": ["second"]})
        assert [s.ctx.name for s in gateway.supervisors] == ["load", "second"]
        active = json.loads((tmp_path / "state" / "configs" / "active.json").read_text())
        assert active["id"] == "good-1" and (tmp_path / "state" / "configs" / active["file"]).read_text() == good

        # a bad one: the same problems check-config prints
        bad = good.replace('grace = 0.1', 'grace = -1')
        try:
            config_from_text(bad, "x")
        except ConfigError as error:
            expected = error.problems
        platform.push("bad-1", bad)
        result = await outcome("bad-1")
        assert result["result"] == "rejected"
        assert result["reasons"] == expected == ["windows.grace: expected a number >= 0 and <= 3600, found -1"]

        # unsigned while signing is required; signed by another key; not an envelope at all
        platform.push("unsigned-1", good.replace("health_timeout = 3.0", "health_timeout = 4.0"), sign=False)
        assert (await outcome("unsigned-1"))["reasons"][0].startswith("unsigned: remote_config.require_signature")
        platform.push("forged-1", good, key=Ed25519PrivateKey.generate())
        assert (await outcome("forged-1"))["reasons"][0].startswith("signature: does not verify")
        platform.push_raw(b"[gateway]\nid = 'plain toml, no envelope'")
        await async_wait_for(lambda: len(platform.results) == 5, timeout=20, what="the plain TOML refused")
        assert platform.results[-1]["result"] == "rejected"
        assert platform.results[-1]["reasons"][0].startswith('envelope: expected {"config": <TOML text>')

        # bad bytes: a config cut short, an envelope past the size limit
        platform.push("truncated-1", good[: good.index("[runtime]") + 5])
        assert (await outcome("truncated-1"))["reasons"][0].startswith("remote config truncated-1: not valid TOML")
        platform.push("huge-1", good + "#" * (2 * 1024 * 1024), sign=False)
        await async_wait_for(lambda: len(platform.results) == 7, timeout=20, what="the huge one refused")
        assert platform.results[-1]["reasons"][0].startswith("envelope too large")
        assert [s.ctx.name for s in gateway.supervisors] == ["load", "second"]

        # validates, but its driver cannot read its file: rolled back to good-1
        broken = gateway_toml(tmp_path, mosquitto.port, drivers={"load": str(tmp_path / "gone.jsonl"),
                                                                 "second": str(second)})
        platform.push("broken-1", broken)
        result = await outcome("broken-1")
        assert result["result"] == "rolled_back"
        assert result["reasons"] == ["not healthy within 3 s: driver load: no reading"]
        assert gateway.supervisors[0].driver.config.path == str(load)
        before = gateway.supervisors[0].ctx.readings
        await async_wait_for(lambda: gateway.supervisors[0].ctx.readings > before + 50, timeout=20)
        assert json.loads((tmp_path / "state" / "configs" / "active.json").read_text())["id"] == "good-1"

        # the same id again with other text, rolled back: the text in force stays on disk as applied,
        # so the next start runs good-1 and never the refused text
        platform.push("good-1", broken + "\n# sent again under good-1's id\n")
        await async_wait_for(lambda: len(platform.results) == 9, timeout=30, what="the reused id")
        assert platform.results[-1]["result"] == "rolled_back"
        active = json.loads((tmp_path / "state" / "configs" / "active.json").read_text())
        assert (tmp_path / "state" / "configs" / active["file"]).read_text() == good
        in_force = gateway.remote_config.startup_config()
        assert in_force is not None and in_force.drivers == config_from_text(good.encode(), "good-1").drivers

        on_disk = [json.loads(line)["result"] for line in
                   (tmp_path / "state" / "configs" / "results.jsonl").read_text().splitlines()]
        assert on_disk == ["applied", *["rejected"] * 6, "rolled_back", "rolled_back"]
        assert gateway.remote_config.results == {"applied": 1, "rejected": 6, "rolled_back": 2}
        assert gateway.reloads == {"applied": 5}

        # a state folder that refuses the copy: refused with the reason, and the next push is handled
        configs = tmp_path / "state" / "configs"
        configs.rename(tmp_path / "configs-aside")
        configs.write_text("not a folder")
        for n in (1, 2):
            platform.push(f"unstorable-{n}", good + f"\n# push {n}\n")
            result = await outcome(f"unstorable-{n}")
            assert result["result"] == "rejected" and result["reasons"][0].startswith(f"cannot store it in {configs}")
        configs.unlink()
        (tmp_path / "configs-aside").rename(configs)
    finally:
        gateway.request_stop()
        summary = await asyncio.wait_for(task, timeout=60)
        await asyncio.to_thread(platform.close)
    # nothing lost: every batch acknowledged by both uplinks, every reading in a delivered window
    assert summary.outbox_batches == 0 and summary.evicted_batches == 0
    delivered = windows_delivered(tmp_path / "state" / "batches" / "batches.jsonl.gz")
    readings = {f"test:{s.ctx.name}/1": s.ctx.readings for s in gateway.supervisors}
    assert delivered == readings


async def test_remote_config_in_force_wins_until_the_local_file_changes(tmp_path: Path, mosquitto: Broker) -> None:
    """Restart with the accepted remote config; after the local file is edited, it wins."""
    key = Ed25519PrivateKey.generate()
    (tmp_path / "platform.pub").write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    load = write_replay(tmp_path / "load.jsonl", "test:load/1")
    second = write_replay(tmp_path / "second.jsonl", "test:second/1")
    local = tmp_path / "gateway.toml"
    local.write_text(gateway_toml(tmp_path, mosquitto.port, drivers={"load": str(load)}))
    platform = await asyncio.to_thread(Platform, mosquitto.port, key)
    try:
        gateway = Gateway(load_config(local))
        task = asyncio.create_task(gateway.run(duration=60))
        platform.push("two-drivers", gateway_toml(tmp_path, mosquitto.port,
                                                  drivers={"load": str(load), "second": str(second)}))
        await async_wait_for(lambda: platform.result("two-drivers"), timeout=30)
        assert platform.result("two-drivers")["result"] == "applied"  # type: ignore[index]
        # SIGHUP with the local file unchanged keeps the remote config
        assert (await gateway.reload()).result == "unchanged"
        gateway.request_stop()
        await asyncio.wait_for(task, timeout=30)

        gateway = Gateway(load_config(local))
        task = asyncio.create_task(gateway.run(duration=60))
        await async_wait_for(lambda: len(gateway.supervisors) == 2, timeout=20, what="the remote config at start")
        # the retained envelope comes back on connect: handled once, not applied again
        await async_wait_for(lambda: gateway.runners[1].ctx.counters.get("config_messages"), timeout=20)
        assert gateway.reloads == {}
        # a technician edits the local file: it replaces the remote config on reload
        local.write_text(local.read_text() + "\n# edited on site\n")
        result = await gateway.reload()
        assert result.result == "applied" and result.changes == {"drivers_removed": ["second"]}
        assert not (tmp_path / "state" / "configs" / "active.json").exists()
        gateway.request_stop()
        await asyncio.wait_for(task, timeout=30)
    finally:
        await asyncio.to_thread(platform.close)
