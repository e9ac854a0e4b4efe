"""check-config: every problem of a config in one run, in plain words, secrets never shown,
and what the config needs from the box (devices, files, state dir, ports) checked for real."""

from __future__ import annotations

import copy
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec.inspect as mi
import pytest

from gateway.checks import check_host
from gateway.cli import main as cli_main
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.registry import DRIVER_PACKAGES, UPLINK_MODULES, driver_module, uplink_module
from gateway.validation import PATTERN_WORDS

BASE: dict[str, Any] = {
    "gateway": {"id": "gw-1", "state_dir": "/tmp/x"},
    "drivers": [{"type": "replay", "path": "a.csv"}],
}
SECRET = "S3cr3tValue-77"


def merged(patch: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


LORA_ABP = {"type": "lorawan", "mode": "concentrator", "listen": "127.0.0.1:0"}

# (patch, exact messages expected among the problems)
CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"gateway": {"id": "gw 1"}},
     ["gateway.id: expected 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or "
      "digit, found 'gw 1'"]),
    ({"gateway": {"state_dir": 5}}, ["gateway.state_dir: expected text, found 5"]),
    ({"gateway": "gw-1"}, ["gateway: expected a table, found 'gw-1'"]),
    ({"windows": {"window": 0}}, ["windows.window: expected a whole number >= 1 and <= 86400, found 0"]),
    ({"windows": {"window": 1.5}}, ["windows.window: expected a whole number >= 1 and <= 86400, found 1.5"]),
    ({"windows": {"grace": "ten"}}, ["windows.grace: expected a number >= 0 and <= 3600, found 'ten'"]),
    ({"windows": {"grace": True}}, ["windows.grace: expected a number >= 0 and <= 3600, found True"]),
    ({"windows": {"windoww": 60}},
     ["windows.windoww: unknown key (check the spelling; known keys: checkpoint, grace, "
      "keyframe_interval, max_lateness, window)"]),
    ({"outbox": {"max_bytes": 10}}, ["outbox.max_bytes: expected a whole number >= 65536, found 10"]),
    ({"log": {"level": "loud"}},
     ['log.level: expected one of "debug", "error", "info", "warning", found \'loud\'']),
    ({"health": {"listen": "127.0.0.1:99999"}},
     ["health.listen: expected a port from 0 to 65535, found 99999"]),
    ({"health": {"listen": "nowhere"}},
     ['health.listen: expected host:port (e.g. 127.0.0.1:9108) or "", found \'nowhere\'']),
    ({"runtime": {"restart_backoff_initial": 10.0, "restart_backoff_max": 5.0}},
     ["runtime.restart_backoff_max: expected >= restart_backoff_initial (10.0), found 5.0"]),
    ({"drivers": []}, ["drivers: expected at least one [[drivers]] table, found none"]),
    ({"drivers": [{"type": "nope"}]},
     ["drivers[0].type: expected one of ble, lorawan, ocpp, replay, serial, found 'nope'"]),
    ({"drivers": [{"type": "replay"}]},
     ["drivers[0].path: required key is missing (expected text)"]),
    ({"drivers": [{"type": "replay", "path": "a.csv", "speed": -1}]},
     ["drivers[0].speed: expected a number >= 0, found -1"]),
    ({"drivers": [{"type": "replay", "path": "a.txt"}]},
     ["drivers[0].path: expected a .jsonl or .csv file (optionally .gz), found 'a.txt'"]),
    ({"drivers": [{"type": "replay", "path": "a.csv"}, {"type": "replay", "path": "b.csv"}]},
     ["drivers[1].name: expected a unique name, found 'replay' twice"]),
    # four problems in one driver table, all reported (msgspec alone stops at the first)
    ({"drivers": [{**LORA_ABP, "net_id": "xyz", "dedup_window": 9, "tx_power": "high",
                   "devices": [{"dev_eui": "zz", "nwk_skey": SECRET, "activation": "abp"}]}]},
     ["drivers[0].net_id: expected 6 hex digits, found 'xyz'",
      "drivers[0].dedup_window: expected a number >= 0 and <= 5, found 9",
      "drivers[0].tx_power: expected a whole number >= 0 and <= 30, found 'high'",
      "drivers[0].devices[0].dev_eui: expected 16 hex digits, found 'zz'",
      f"drivers[0].devices[0].nwk_skey: expected 32 hex digits (or nothing), found a value of "
      f"{len(SECRET)} characters (hidden)"]),
    ({"drivers": [{**LORA_ABP, "listen": "0.0.0.0:70000"}]},
     ["drivers[0].listen: expected a port from 0 to 65535, found 70000"]),
    ({"drivers": [{**LORA_ABP, "devices": [{"dev_eui": "0011223344556677", "activation": "abp"}]}]},
     ["drivers[0].devices[0].dev_addr: expected a value for an ABP device, found nothing"]),
    ({"drivers": [{"type": "ocpp", "passwords": {"CP1": "short"}, "port": -2}]},
     ["drivers[0].port: expected a whole number >= 0 and <= 65535, found -2",
      "drivers[0].passwords.CP1: expected text of 8 to 40 characters, found a value of 5 "
      "characters (hidden)"]),
    ({"drivers": [{"type": "ocpp", "path_prefix": "ocpp"}]},
     ["drivers[0].path_prefix: expected a URL path starting and ending with '/' (e.g. /ocpp/), "
      "found 'ocpp'"]),
    ({"drivers": [{"type": "ble", "adapter": "usb0", "bthome_keys": {"AA:BB:CC:DD:EE:FF": 7}}]},
     ["drivers[0].adapter: expected an adapter name like hci0 (or nothing for the first "
      "adapter), found 'usb0'",
      "drivers[0].bthome_keys.AA:BB:CC:DD:EE:FF: expected text, found a whole number (hidden)"]),
    ({"drivers": [{"type": "serial", "port": "/dev/ttyUSB0", "protocol": "modbus",
                   "modbus": {"devices": [{"unit": 0, "registers": [{"metric": "x", "address": -1,
                                                                     "type": "int64"}]}]}}]},
     ["drivers[0].modbus.devices[0].unit: expected a whole number >= 1 and <= 247, found 0",
      "drivers[0].modbus.devices[0].registers[0].address: expected a whole number >= 0 and "
      "<= 65535, found -1",
      'drivers[0].modbus.devices[0].registers[0].type: expected one of "float32", "int16", '
      '"int32", "uint16", "uint32", found \'int64\'']),
    ({"drivers": [{"type": "serial", "port": "/dev/ttyUSB0", "protocol": "wxt",
                   "wxt": {"address": "10", "mode": "push"}}]},
     ["drivers[0].wxt.address: expected one letter or digit, found '10'",
      'drivers[0].wxt.mode: expected one of "automatic", "polled", found \'push\'']),
    ({"uplinks": [{"type": "mqtt", "keepalive": 1, "topic_prefix": "a/#", "password": SECRET,
                   "port": 1883.0}]},
     ["uplinks[0].keepalive: expected a whole number >= 5 and <= 3600, found 1",
      "uplinks[0].topic_prefix: expected MQTT topic levels without wildcards (+, #), not "
      "starting with '$' or '/', not ending with '/', found 'a/#'",
      "uplinks[0].port: expected a whole number >= 0 and <= 65535, found 1883.0"]),
    ({"uplinks": [{"type": "mqtt", "password": SECRET}]},
     ['uplinks[0].password: expected a username with it, found username = ""']),
    ({"uplinks": [{"type": "influxdb", "url": "ftp://x", "token": 12345}]},
     ["uplinks[0].url: expected an http:// or https:// URL without spaces, found 'ftp://x'",
      "uplinks[0].token: expected text, found a whole number (hidden)"]),
    ({"uplinks": [{"type": "file", "rotate_bytes": 1, "gzip": "yes"}]},
     ["uplinks[0].rotate_bytes: expected a whole number >= 4096, found 1",
      "uplinks[0].gzip: expected true or false, found 'yes'"]),
    ({"uplinks": [{"type": "file"}, {"type": "file"}]},
     ["uplinks[1].name: expected a unique name, found 'file' twice"]),
    ({"uplinks": {"type": "file"}},
     ["uplinks: expected a list (each a table), found {'type': 'file'}"]),
]


@pytest.mark.parametrize(("patch", "expected"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_each_broken_config_gets_its_exact_messages(patch: dict[str, Any], expected: list[str]) -> None:
    found = problems(merged(patch))
    for message in expected:
        assert message in found, (message, found)
    assert not any(SECRET in p for p in found), found
    assert not any(re.search(r"\^|\$`|\\d|\[0-9", p) for p in found), found  # no raw regex


def test_there_are_at_least_25_cases() -> None:
    assert len(CASES) >= 25


def test_every_problem_of_every_table_in_one_run() -> None:
    raw = merged({
        "windows": {"window": 0, "grace": "x"},
        "outbox": {"max_bytes": 1},
        "drivers": [{"type": "replay", "path": "a.csv", "speed": -1, "loop": "no"},
                    {"type": "replay", "path": "b.csv", "name": "b", "bogus": 1}],
        "uplinks": [{"type": "file", "rotate_bytes": 1, "keep_files": 0}],
    })
    found = problems(raw)
    assert [p.split(":")[0] for p in found] == [
        "windows.window", "windows.grace", "outbox.max_bytes", "drivers[0].speed",
        "drivers[0].loop", "drivers[1].bogus", "uplinks[0].rotate_bytes", "uplinks[0].keep_files",
    ]


def test_every_pattern_in_a_shipped_config_has_plain_words() -> None:
    from gateway import config as cfg

    def patterns(t: Any) -> set[str]:
        if isinstance(t, mi.StrType):
            return {t.pattern} if t.pattern else set()
        children: list[Any] = []
        if isinstance(t, mi.StructType):
            children = [f.type for f in t.fields]
        elif isinstance(t, mi.ListType):
            children = [t.item_type]
        elif isinstance(t, mi.DictType):
            children = [t.value_type]
        elif isinstance(t, mi.UnionType):
            children = list(t.types)
        return set().union(*(patterns(c) for c in children)) if children else set()

    structs = [cfg.GatewaySection, cfg.WindowsSection, cfg.OutboxSection, cfg.HealthSection]
    structs += [driver_module(name).Config for name in DRIVER_PACKAGES]
    structs += [uplink_module(name).Config for name in UPLINK_MODULES]
    used = set().union(*(patterns(mi.type_info(s)) for s in structs))
    assert used and used <= set(PATTERN_WORDS), used - set(PATTERN_WORDS)


def test_no_secret_reaches_check_config_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "secret.toml"
    config.write_text(
        f'[gateway]\nid = "gw"\nstate_dir = "{tmp_path}"\n'
        f'[[drivers]]\ntype = "lorawan"\nmode = "concentrator"\nlisten = "127.0.0.1:0"\n'
        f'[[drivers.devices]]\ndev_eui = "0011223344556677"\nactivation = "abp"\n'
        f'app_skey = "{SECRET}"\nnwk_skey = "{SECRET}x"\n'
        f'[[drivers]]\ntype = "ocpp"\nname = "cp"\nport = 0\npasswords = {{ CP1 = "{SECRET}{SECRET}{SECRET}" }}\n'
        f'[[uplinks]]\ntype = "mqtt"\npassword = "{SECRET}"\ntoken = "{SECRET}"\n'
    )
    assert cli_main(["check-config", str(config)]) == 2
    out = capsys.readouterr()
    assert "app_skey" in out.err and "nwk_skey" in out.err and "uplinks[0].token: unknown key" in out.err
    assert SECRET not in out.err + out.out


# -- the box --------------------------------------------------------------------------------


def host_findings(tmp_path: Path, patch: dict[str, Any]) -> list[str]:
    data = tmp_path / "a.csv"
    data.write_text("device,metric,value,ts\n")
    raw = merged({"gateway": {"state_dir": str(tmp_path / "state")}, "health": {"listen": ""},
                  "drivers": [{"type": "replay", "path": str(data)}], **patch})
    return [f"{f.severity} {f}" for f in check_host(parse_config(raw))]


def test_a_clean_box_has_no_findings(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        tty = os.ttyname(slave)
        assert host_findings(tmp_path, {"drivers": [
            {"type": "serial", "port": tty, "protocol": "sds011"},
        ], "health": {"listen": "127.0.0.1:0"}}) == []
    finally:
        os.close(master)
        os.close(slave)


def test_missing_files_devices_and_state_dir(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    found = host_findings(tmp_path, {
        "gateway": {"state_dir": "/proc/edge-gateway"},
        "drivers": [
            {"type": "serial", "port": str(tmp_path / "ttyUSB9"), "protocol": "sds011"},
            {"type": "replay", "name": "day", "path": str(tmp_path / "missing.csv")},
        ],
        "uplinks": [
            {"type": "mqtt", "tls": True, "ca_file": str(garbage),
             "cert_file": str(tmp_path / "c.pem"), "key_file": str(tmp_path / "k.pem")},
            {"type": "influxdb", "url": "https://x", "ca_file": str(tmp_path / "ca.pem")},
        ],
    })
    assert found == [
        "error gateway.state_dir: /proc/edge-gateway (its nearest existing parent /proc) is not "
        "writable: No such file or directory",
        f"warning drivers[0].port: {tmp_path}/ttyUSB9 does not exist (adapter unplugged? the "
        "driver keeps trying to open it)",
        f"warning drivers[1].path: {tmp_path}/missing.csv does not exist yet (the driver retries until it appears)",
        f"error uplinks[0].ca_file: {garbage} holds no PEM certificate (NO_CERTIFICATE_OR_CRL_FOUND)",
        f"error uplinks[0].cert_file: {tmp_path}/c.pem does not exist",
        f"error uplinks[0].key_file: {tmp_path}/k.pem does not exist",
        f"error uplinks[1].ca_file: {tmp_path}/ca.pem does not exist",
    ]


def test_listen_addresses_are_tried(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        found = host_findings(tmp_path, {
            "health": {"listen": f"127.0.0.1:{port}"},
            "drivers": [{"type": "ocpp", "host": "192.0.2.1", "port": 9000, "allowed_ids": ["CP.*"]}],
        })
    finally:
        busy.close()
    assert found == [
        f"warning health.listen: port {port} is in use (the gateway already running, or another program)",
        "error drivers[0].port: 192.0.2.1 is not an address of this box",
    ]


def test_check_config_piped_into_head_ends_cleanly(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "check-config", str(root / "config" / "demo.toml")],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, cwd=root,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.returncode == 141
