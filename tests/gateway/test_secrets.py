"""Secrets from the environment, files and systemd credentials (gateway/secrets.py), and a real
run that prints none of them anywhere."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.health import fetch_status
from gateway.secrets import MAX_SECRET_BYTES, REDACTED, resolve_secrets
from tests.support.mosquitto import Broker
from tests.support.ports import free_port
from tests.support.wait import wait_for
from tests.uplinks.conftest import ScriptedHttpServer
from tests.uplinks.gateway_process import write_replay

ROOT = Path(__file__).resolve().parents[2]

# Distinct values, none a substring of another or of anything the gateway prints on its own.
MQTT_PASSWORD = "uplink-Pw-7c1f9e02"
NS_PASSWORD = "netserver-Pw-55aa3d"
INFLUX_TOKEN = "influx-Tok-0b9d7e41aa"
NWK_SKEY = "2B7E151628AED2A6ABF7158809CF4F3C"
APP_SKEY = "3C8F262739BFE3B7BC0826991AD0504D"
APP_KEY = "7F3A9C0E15D24B68A1C3E5F7092B4D6E"
BIND_KEY = "231D39C1D7CC1AB1AEE224CD096DB932"
OCPP_PASSWORD = "cp-one-Pw-93e1b7"
OCPP_AUTH_KEY = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678"
ALL_SECRETS = (MQTT_PASSWORD, NS_PASSWORD, INFLUX_TOKEN, NWK_SKEY, APP_SKEY, APP_KEY, BIND_KEY,
               OCPP_PASSWORD, OCPP_AUTH_KEY)


def secret_file(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def base_config(**extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "gateway": {"id": "gw-secrets"},
        "drivers": [{"type": "replay", "path": "/nonexistent.jsonl"}],
    }
    raw.update(extra)
    return raw


# ------------------------------------------------------------------ resolution


def test_every_form_resolves_where_each_secret_key_is(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    secret_file(creds, "mqtt", MQTT_PASSWORD + "\n")  # systemd-creds / echo leave a newline
    secret_file(creds, "bind", BIND_KEY)
    nwk = secret_file(tmp_path, "nwk", NWK_SKEY + "\r\n")
    ocpp = secret_file(tmp_path, "ocpp", OCPP_PASSWORD)
    environ = {"CREDENTIALS_DIRECTORY": str(creds), "NS_PW": NS_PASSWORD, "APPKEY": APP_KEY,
               "AUTHKEY": OCPP_AUTH_KEY}
    raw = base_config(
        drivers=[
            {"type": "lorawan", "name": "ns", "mqtt_username": "ns", "mqtt_password": "env:NS_PW"},
            {"type": "lorawan", "name": "conc", "mode": "concentrator", "devices": [
                {"dev_eui": "70b3d57ed0000001", "activation": "abp", "dev_addr": "26011234",
                 "nwk_skey": f"file:{nwk}", "app_skey": APP_SKEY},
                {"dev_eui": "70b3d57ed0000002", "activation": "otaa", "app_key": "env:APPKEY"},
            ]},
            {"type": "ble", "bthome_keys": {"A4:C1:38:00:00:01": "credential:bind"}},
            {"type": "ocpp", "passwords": {"CP-1": f"file:{ocpp}"},
             "authorization_keys": {"CP-2": "env:AUTHKEY"}},
        ],
        uplinks=[
            {"type": "mqtt", "username": "gw", "password": "credential:mqtt"},
            {"type": "influxdb", "token": "env:TOKEN"},
        ],
    )
    before = json.dumps(raw, sort_keys=True)
    environ["TOKEN"] = INFLUX_TOKEN
    resolved = resolve_secrets(raw, environ)
    assert json.dumps(raw, sort_keys=True) == before, "the caller's document is not changed"
    assert resolved.values == set(ALL_SECRETS)
    drivers, uplinks = resolved.document["drivers"], resolved.document["uplinks"]
    assert drivers[0]["mqtt_password"] == NS_PASSWORD
    assert drivers[1]["devices"][0]["nwk_skey"] == NWK_SKEY
    assert drivers[1]["devices"][0]["app_skey"] == APP_SKEY
    assert drivers[1]["devices"][1]["app_key"] == APP_KEY
    assert drivers[2]["bthome_keys"] == {"A4:C1:38:00:00:01": BIND_KEY}
    assert drivers[3]["passwords"] == {"CP-1": OCPP_PASSWORD}
    assert drivers[3]["authorization_keys"] == {"CP-2": OCPP_AUTH_KEY}
    assert uplinks[0]["password"] == MQTT_PASSWORD
    assert uplinks[1]["token"] == INFLUX_TOKEN


def test_parse_config_resolves_from_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EG_TEST_TOKEN", INFLUX_TOKEN)
    config = parse_config(base_config(uplinks=[{"type": "influxdb", "token": "env:EG_TEST_TOKEN"}]))
    assert config.uplinks[0].token == INFLUX_TOKEN  # type: ignore[attr-defined]


def test_references_only_in_secret_keys(tmp_path: Path) -> None:
    """`env:` in a key that is no secret is an ordinary value (here: a bad topic prefix is not
    looked up in the environment), and a secret key of another plugin type is not touched."""
    raw = base_config(uplinks=[{"type": "file", "directory": "env:HOME"}])
    assert resolve_secrets(raw, {"HOME": "/root"}).document == raw


def test_unresolvable_references_are_all_reported_by_key_path(tmp_path: Path) -> None:
    empty = secret_file(tmp_path, "empty", "\n")
    big = secret_file(tmp_path, "big", "x" * (MAX_SECRET_BYTES + 1))
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    raw = base_config(
        drivers=[{"type": "ocpp", "passwords": {
            "CP-1": "env:MISSING_VAR", "CP-2": "env:EMPTY_VAR", "CP-3": "env:1bad",
            "CP-4": f"file:{tmp_path / 'absent'}", "CP-5": f"file:{empty}", "CP-6": f"file:{big}",
            "CP-7": f"file:{binary}", "CP-8": "file:relative/path", "CP-9": "credential:ocpp",
            "CP-10": "credential:../etc/shadow",
        }}],
    )
    with pytest.raises(ConfigError) as caught:
        resolve_secrets(raw, {"EMPTY_VAR": ""})
    w = "drivers[0].passwords"
    assert caught.value.problems == [
        f"{w}.CP-1: environment variable MISSING_VAR is not set",
        f"{w}.CP-2: environment variable EMPTY_VAR is empty",
        f"{w}.CP-3: expected env:NAME with a variable name after env:",
        f"{w}.CP-4: file:{tmp_path / 'absent'}: cannot read {tmp_path / 'absent'} "
        "(No such file or directory)",
        f"{w}.CP-5: file:{empty}: {empty} is empty",
        f"{w}.CP-6: file:{big}: {big} is larger than {MAX_SECRET_BYTES} bytes (not a secret?)",
        f"{w}.CP-7: file:{binary}: {binary} is not UTF-8 text",
        f"{w}.CP-8: expected an absolute path after file:",
        f"{w}.CP-9: credential:ocpp: $CREDENTIALS_DIRECTORY is not set (systemd sets it for a "
        "unit with LoadCredential=ocpp:...; outside the service, use file: or env:)",
        f"{w}.CP-10: expected credential:NAME with a file name after credential:",
    ]


def test_a_malformed_secret_is_reported_without_its_value(tmp_path: Path) -> None:
    bad_key = BIND_KEY[:-1] + "G"  # one character off: fails the 32-hex-digit check
    key_file = secret_file(tmp_path, "bind", bad_key)
    short = "abc'\\12"  # repr() escapes the backslash: the escaped form is redacted too
    raw = base_config(drivers=[
        {"type": "ble", "bthome_keys": {"A4:C1:38:00:00:01": f"file:{key_file}"}},
        {"type": "ocpp", "passwords": {"CP-1": short}},
    ])
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    text = "\n".join(caught.value.problems)
    assert REDACTED in text or "(hidden)" in text
    assert bad_key not in text and bad_key.lower() not in text
    assert short not in text and repr(short)[1:-1] not in text


def test_check_config_prints_no_secret(tmp_path: Path) -> None:
    """msgspec's messages quote the value found: a secret that fails validation is redacted."""
    bad_nwk = NWK_SKEY[:-2]
    key_file = secret_file(tmp_path, "nwk", bad_nwk)
    short_password = "sh0rt-7"  # OCPP passwords have at least 8 characters
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[gateway]
id = "gw-secrets"
[[drivers]]
type = "lorawan"
mode = "concentrator"
[[drivers.devices]]
dev_eui = "70b3d57ed0000001"
activation = "abp"
dev_addr = "26011234"
nwk_skey = "file:{key_file}"
app_skey = "{APP_SKEY}"
[[drivers]]
type = "ocpp"
passwords = {{ "CP-1" = "env:EG_PW" }}
""")

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "check-config", str(config)], cwd=ROOT,
            capture_output=True, text=True, env=dict(os.environ, EG_PW=short_password), timeout=60,
        )

    done = check()
    assert done.returncode == 2
    problems = (done.stdout + done.stderr).splitlines()
    assert any("drivers[0].devices[0].nwk_skey:" in line for line in problems), problems
    assert any("drivers[1].passwords" in line for line in problems), problems
    for secret in (bad_nwk, short_password):
        assert secret not in done.stdout + done.stderr
    # a missing source is named by key path and reference, and stops before validation
    key_file.unlink()
    done = check()
    assert done.returncode == 2
    assert done.stderr.splitlines()[1:] == [
        f"  error    drivers[0].devices[0].nwk_skey: file:{key_file}: cannot read {key_file} "
        "(No such file or directory)",
    ]


# ------------------------------------------------------------------ a real run


def _variants(secret: str) -> set[str]:
    """Forms a secret could be printed in: as written, either case (hex keys), Basic auth."""
    forms = {secret, secret.lower(), secret.upper()}
    forms.add(base64.b64encode(secret.encode()).decode())
    return forms


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    server = Broker(workdir=tmp_path / "broker", users={"gw": MQTT_PASSWORD, "ns": NS_PASSWORD})
    server.workdir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influx() -> Iterator[ScriptedHttpServer]:
    server = ScriptedHttpServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


@pytest.mark.slow
def test_a_real_run_prints_no_configured_secret(
    tmp_path: Path, broker: Broker, influx: ScriptedHttpServer
) -> None:
    creds = tmp_path / "credentials"
    secret_file(creds, "mqtt", MQTT_PASSWORD + "\n")
    secret_file(creds, "bthome", BIND_KEY)
    secret_file(creds, "cp2", OCPP_AUTH_KEY)
    nwk = secret_file(tmp_path / "secrets", "nwk", NWK_SKEY)
    token = secret_file(tmp_path / "secrets", "influx", INFLUX_TOKEN)
    ocpp_pw = secret_file(tmp_path / "secrets", "cp1", OCPP_PASSWORD)
    replay = tmp_path / "replay.jsonl"
    write_replay(replay, ["lora:70b3d57ed0000009"], steps=40, step_seconds=0.05)
    metrics_port, ocpp_port, udp_port = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[gateway]
id = "gw-secrets"
state_dir = "{tmp_path / 'state'}"
[windows]
window = 1
grace = 0.2
checkpoint = 0.5
[outbox]
commit_interval = 0.1
[health]
listen = "127.0.0.1:{metrics_port}"
[log]
level = "debug"
format = "json"
[runtime]
restart_backoff_initial = 0.2
restart_backoff_max = 5.0

[[drivers]]
type = "replay"
path = "{replay}"

[[drivers]]
type = "lorawan"
name = "ns"
mqtt_host = "127.0.0.1"
mqtt_port = {broker.port}
mqtt_username = "ns"
mqtt_password = "env:EG_NS_PASSWORD"

[[drivers]]
type = "lorawan"
name = "conc"
mode = "concentrator"
listen = "127.0.0.1:{udp_port}"
[[drivers.devices]]
dev_eui = "70b3d57ed0000001"
activation = "abp"
dev_addr = "26011234"
nwk_skey = "file:{nwk}"
app_skey = "{APP_SKEY}"
[[drivers.devices]]
dev_eui = "70b3d57ed0000002"
activation = "otaa"
app_key = "env:EG_APP_KEY"

[[drivers]]
type = "ble"
bthome_keys = {{ "A4:C1:38:00:00:01" = "credential:bthome" }}

[[drivers]]
type = "ocpp"
host = "127.0.0.1"
port = {ocpp_port}
passwords = {{ "CP-1" = "file:{ocpp_pw}" }}
authorization_keys = {{ "CP-2" = "credential:cp2" }}

[[uplinks]]
type = "mqtt"
host = "127.0.0.1"
port = {broker.port}
username = "gw"
password = "credential:mqtt"
connect_timeout = 2
ack_timeout = 5

[[uplinks]]
type = "influxdb"
url = "{influx.url}"
token = "file:{token}"
""")
    env = dict(
        os.environ, PYTHONUNBUFFERED="1", CREDENTIALS_DIRECTORY=str(creds),
        EG_NS_PASSWORD=NS_PASSWORD, EG_APP_KEY=APP_KEY,
        # no BlueZ here: the BLE driver fails, logs and is restarted; that path must not leak
        DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path / 'no-bus'}",
    )
    printed: list[str] = []

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        printed.extend((done.stdout, done.stderr))
        return done

    checked = cli("check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "config " in checked.stdout and ": OK" in checked.stdout

    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config), "--summary"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{metrics_port}/metrics"

            def forwarded() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(log_path.read_text(errors="replace"))
                try:
                    status = fetch_status(url, timeout=1.0)
                except OSError:
                    return False
                counts = {s[0].get("uplink"): s[1]
                          for s in status.get("uplink_forwarded_batches", [])}
                return counts.get("mqtt", 0) > 0 and counts.get("influxdb", 0) > 0

            # both uplinks delivering proves the password from the credential and the token from
            # the file reached them
            wait_for(forwarded, timeout=60, what="batches acknowledged by MQTT and InfluxDB")
            assert {r[1].get("Authorization") for r in influx.requests} == {f"Token {INFLUX_TOKEN}"}
            # a charge point with the wrong password and one with the right key: both login paths
            base = f"ws://127.0.0.1:{ocpp_port}/"
            basic = "Basic " + base64.b64encode(b"CP-1:wrong-password-1").decode()
            with pytest.raises(InvalidStatus) as refused:
                connect(base + "CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                        additional_headers={"Authorization": basic}, open_timeout=10)
            assert refused.value.response.status_code == 401
            basic = "Basic " + base64.b64encode(b"CP-2:" + bytes.fromhex(OCPP_AUTH_KEY)).decode()
            with connect(base + "CP-2", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                         additional_headers={"Authorization": basic}, open_timeout=10) as ws:
                assert ws.subprotocol == "ocpp1.6"
            with urllib_open(url) as metrics_text:
                printed.append(metrics_text)
            status = cli("status", "--url", url)
            # 0 ok, 1 degraded, 2 unhealthy (the BLE driver has no D-Bus here): printed either way
            assert status.returncode in (0, 1, 2) and "gw-" in status.stdout, status.stderr
            printed.append(status.stdout + status.stderr)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    output = log_path.read_text(errors="replace")
    assert code == 0, output
    printed.append(output)
    everything = "\n".join(printed)
    # the search finds what it looks for: the config file holds one secret in clear text
    assert APP_SKEY in _found(config.read_text())
    leaks = sorted(secret for secret in ALL_SECRETS if _variants(secret) & _found(everything))
    assert leaks == [], f"secrets printed: {leaks}"


def urllib_open(url: str) -> Any:
    import contextlib
    import urllib.request

    @contextlib.contextmanager
    def opened() -> Iterator[str]:
        with urllib.request.urlopen(url, timeout=5) as answer:
            yield answer.read().decode()

    return opened()


def _found(text: str) -> set[str]:
    """Every secret variant that occurs in `text`."""
    return {form for secret in ALL_SECRETS for form in _variants(secret) if form in text}


def test_example_config_is_still_valid() -> None:
    raw = tomllib.loads((ROOT / "config" / "gateway.example.toml").read_text())
    assert parse_config(raw).gateway.id == "gw-lamppost-0001"
