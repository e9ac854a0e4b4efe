"""ThingsBoard IoT Gateway for `benchmarks.peer`: its own venv, its config files, its launch.

The venv lives outside the repository (default `~/.cache/edge-gateway/peer-venv-tb38`, or
`$EDGE_GATEWAY_PEER_VENV`) and is created on first use with the venv's ordinary pip from PyPI;
nothing of it enters edge-gateway's own environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.peer_support.workload import METRICS

__all__ = [
    "PACKAGE_SPEC",
    "LAUNCHER",
    "PeerVenv",
    "default_venv_path",
    "ensure_venv",
    "gateway_config",
    "connector_config",
    "logs_config",
    "write_config",
]

PACKAGE_SPEC = "thingsboard-gateway>=3.8,<3.9"
LAUNCHER = Path(__file__).with_name("tb_launcher.py")
INPUT_TOPIC_FILTER = "application/+/device/+/event/up"


@dataclass
class PeerVenv:
    path: Path
    version: str

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def default_venv_path() -> Path:
    env = os.environ.get("EDGE_GATEWAY_PEER_VENV")
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return cache / "edge-gateway" / "peer-venv-tb38"


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-I", "-c",
         "import importlib.metadata as m, thingsboard_gateway; print(m.version('thingsboard-gateway'))"],
        capture_output=True, text=True, timeout=60,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_venv(path: Path, *, install: bool = True, timeout: float = 600.0) -> tuple[PeerVenv | None, str]:
    """The peer venv with thingsboard-gateway 3.8.x, created and installed when missing.
    Returns (venv, "") or (None, why not)."""
    python = path / "bin" / "python"
    version = _installed_version(python)
    if version is not None:
        if version.startswith("3.8."):
            return PeerVenv(path, version), ""
        return None, f"{path} holds thingsboard-gateway {version}, not 3.8.x (remove it to reinstall)"
    if not install:
        return None, f"no thingsboard-gateway in {path} (installing was not allowed)"
    print(f"peer: installing {PACKAGE_SPEC} into {path} (first run only) ...", flush=True)
    try:
        if not python.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", str(path)], check=True,
                           capture_output=True, text=True, timeout=120)
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", PACKAGE_SPEC],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.CalledProcessError as error:
        return None, f"cannot create a venv at {path}: {(error.stderr or error.stdout or '').strip()[-500:]}"
    except subprocess.TimeoutExpired:
        return None, f"pip install {PACKAGE_SPEC} did not finish within {timeout:.0f} s"
    except OSError as error:
        return None, f"cannot create a venv at {path}: {error}"
    if pip.returncode != 0:
        errors = [line for line in pip.stderr.splitlines() if not line.startswith("WARNING: Location")]
        return None, f"pip install {PACKAGE_SPEC} failed: {' | '.join(errors[-5:])}"
    version = _installed_version(python)
    if version is None:
        return None, f"{PACKAGE_SPEC} installed into {path} but does not import"
    return PeerVenv(path, version), ""


def gateway_config(upstream_host: str, upstream_port: int, max_records: int) -> dict[str, Any]:
    """tb_gateway.json: the ThingsBoard connection goes to the local upstream broker (the fake
    ThingsBoard listens there). Everything that needs a real ThingsBoard or the outside is off:
    remote configuration, remote shell, statistics uploads, gRPC. Storage is its default (memory)."""
    return {
        "thingsboard": {
            "host": upstream_host,
            "port": upstream_port,
            "remoteShell": False,
            "remoteConfiguration": False,
            "latencyDebugMode": False,
            "statistics": {"enable": False, "enableCustom": False, "statsSendPeriodInSeconds": 3600,
                           "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False, "filterFile": "list.json"},
            "maxPayloadSizeBytes": 8196,
            "minPackSendDelayMS": 50,
            "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 60,
            "handleDeviceRenaming": True,
            "security": {"type": "accessToken", "accessToken": "peer-benchmark-token"},
            "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False, "inactivityTimeoutSeconds": 300,
                                       "inactivityCheckPeriodSeconds": 10},
            # The DEFAULT_* names mean "no limit" for a host other than ThingsBoard's clouds.
            "rateLimits": "DEFAULT_TELEMETRY_RATE_LIMIT",
            "dpRateLimits": "DEFAULT_TELEMETRY_DP_RATE_LIMIT",
            "messagesRateLimits": "DEFAULT_MESSAGES_RATE_LIMIT",
            "deviceMessagesRateLimits": "DEFAULT_MESSAGES_RATE_LIMIT",
            "deviceRateLimits": "DEFAULT_TELEMETRY_RATE_LIMIT",
            "deviceDpRateLimits": "DEFAULT_TELEMETRY_DP_RATE_LIMIT",
        },
        "storage": {"type": "memory", "read_records_count": 100, "max_records_count": max_records},
        "grpc": {"enabled": False},
        "connectors": [{"type": "mqtt", "name": "chirpstack-input", "configuration": "mqtt.json"}],
    }


def connector_config(input_host: str, input_port: int, *, event_time: bool = True) -> dict[str, Any]:
    """mqtt.json: the MQTT connector subscribes to the ChirpStack v4 uplink topic and maps the
    same fields edge-gateway's driver reads: device = deviceInfo.devEui, event time = `time`
    (unless `event_time` is off: then the gateway stamps the receive time), temperature and
    humidity from the decoded `object`."""
    timeseries: list[dict[str, Any]] = [
        {"type": "double", "key": metric, "value": "${object." + metric + "}"} for metric in METRICS
    ]
    if event_time:
        for entry in timeseries:
            entry["tsField"] = "${time}"
    return {
        "logLevel": "WARNING",
        "broker": {
            "host": input_host,
            "port": input_port,
            "clientId": "tb-gateway-peer-bench",
            "version": 5,
            "maxMessageNumberPerWorker": 10,
            "maxNumberOfWorkers": 100,
            "cleanSession": True,
            "cleanStart": True,
            "sessionExpiryInterval": 0,
            "security": {"type": "anonymous"},
        },
        "dataMapping": [
            {
                "topicFilter": INPUT_TOPIC_FILTER,
                "subscriptionQos": 1,
                "converter": {
                    "type": "json",
                    "deviceInfo": {
                        "deviceNameExpressionSource": "message",
                        "deviceNameExpression": "${deviceInfo.devEui}",
                        "deviceProfileExpressionSource": "constant",
                        "deviceProfileExpression": "climate-th",
                    },
                    "sendDataOnlyOnChange": False,
                    "timeout": 60000,
                    "attributes": [],
                    "timeseries": timeseries,
                },
            }
        ],
        "requestsMapping": {},
    }


def logs_config(level: str = "WARNING") -> dict[str, Any]:
    """logs.json: every logger of the gateway at `level` to stderr, no log files (edge-gateway
    runs at the same level)."""
    names = ("database", "service", "connector", "converter", "tb_connection", "storage", "extension")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"class": "logging.Formatter",
                                 "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain",
                                 "level": level, "stream": "ext://sys.stderr"}},
        "loggers": {name: {"handlers": ["console"], "level": level, "propagate": False} for name in names},
        "root": {"level": level, "handlers": ["console"]},
    }


def write_config(config_dir: Path, *, input_port: int, upstream_port: int, max_records: int,
                 host: str = "127.0.0.1", event_time: bool = True) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "tb_gateway.json": gateway_config(host, upstream_port, max_records),
        "mqtt.json": connector_config(host, input_port, event_time=event_time),
        "logs.json": logs_config(),
    }
    for name, content in files.items():
        (config_dir / name).write_text(json.dumps(content, indent=2))
    return config_dir


def launch_command(venv: PeerVenv) -> list[str]:
    return [str(venv.python), "-I", str(LAUNCHER)]


def launch_env(config_dir: Path) -> dict[str, str]:
    """The environment for the launcher: its config folder, and every HTTP(S) proxy pointed at a
    closed loopback port as a second fence (the update check is already a no-op), with loopback
    itself exempt so the MQTT connections are direct."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("TB_GW_", "PYTHON"))}
    env["TB_GW_CONFIG_DIR"] = str(config_dir)
    fence = "http://127.0.0.1:9"  # discard port: nothing listens, a connect is refused at once
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[key] = fence
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    return env
