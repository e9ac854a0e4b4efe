"""Remote configuration: the platform pushes a config over the MQTT uplink's broker.

Off by default (`[remote_config] enabled`). The platform publishes, retained, QoS 1, to
`<topic_prefix>/<gateway id>/config` one JSON envelope:

    {"id": "2024-06-01-a", "config": "<the whole TOML text>", "signature": "<base64>"}

- `config`: the complete gateway.toml (not a patch), UTF-8, at most 1 MiB.
- `signature`: Ed25519 (RFC 8032) over exactly the UTF-8 bytes of `config`, base64 (standard
  alphabet, padded); checked against `public_key_file` on the box. Required unless
  `require_signature = false`.
- `id`: letters, digits, `_ . -`, at most 64; names the attempt in results and on disk
  (default: the first 16 hex digits of the payload's SHA-256).

Each attempt is checked like `check-config` checks a file, applied as a reload (only changed
drivers and uplinks restart; gateway.*, windows.*, outbox.* and [remote_config] itself cannot
change remotely), and kept only if the pipeline is healthy again within `health_timeout`: every
driver that delivered a reading within `health_timeout` before the change delivers again, and
every uplink acknowledges a batch (or is connected with nothing to send). Otherwise the previous
config is applied again (rolled back).

The result goes, retained, to `<topic_prefix>/<gateway id>/config/result`:
`{"gateway", "id", "sha256", "result": "applied"|"rejected"|"rolled_back", "reasons": [...],
"changes": {...}, "ts"}`, and is appended to `<state_dir>/configs/results.jsonl`. The same
payload (by SHA-256) is handled once, so the retained message coming back on every reconnect does
nothing, even after a restart.

On disk (`<state_dir>/configs/`): `<id>.toml` for every config received, `active.json` naming the
remote config in force. Which wins at start and on SIGHUP: the remote config, while the local
file (/etc/edge-gateway/gateway.toml) is byte for byte the one it replaced; once a technician
edits the local file, the local file wins and `active.json` is retired. The local file is never
written (under systemd it is read-only to the service).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from prometheus_client.core import CounterMetricFamily

from gateway.config import Config
from gateway.errors import ConfigError, UplinkError
from gateway.reload import MAX_CONFIG_BYTES, config_from_text, core_problems, restore_metrics

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from gateway.runtime import Gateway

__all__ = ["MAX_ENVELOPE_BYTES", "RESULTS", "Envelope", "RemoteConfig", "decode_envelope", "load_public_key"]

log = structlog.get_logger("remote_config")

# The envelope carries a config of at most 1 MiB, JSON-escaped, plus a signature.
MAX_ENVELOPE_BYTES = 2 * MAX_CONFIG_BYTES
RESULTS = ("applied", "rejected", "rolled_back")
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# results.jsonl is cut back to this many lines once it holds twice as many
KEEP_RESULTS = 200
# received <id>.toml files kept (the active one always)
KEEP_CONFIGS = 20
# a result the broker did not take is published again this often (seconds)
REPUBLISH_EVERY = 5.0


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    config: str
    id: str = ""
    signature: str = ""


def load_public_key(path: str) -> tuple[Ed25519PublicKey | None, str]:
    """The Ed25519 public key in a PEM file, or None and the reason it cannot be used."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return None, f"cannot read {path!r} ({error.strerror or error})"
    try:
        key = load_pem_public_key(data)
    except ValueError:
        return None, f"expected a PEM public key (-----BEGIN PUBLIC KEY-----) in {path!r}, found none"
    if not isinstance(key, Ed25519PublicKey):
        return None, f"expected an Ed25519 public key in {path!r}, found {type(key).__name__}"
    return key, ""


class Rejected(Exception):
    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reasons))


def decode_envelope(payload: bytes) -> Envelope:
    """Raises Rejected with the reason when the payload is not an envelope."""
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise Rejected([f"envelope too large ({len(payload):,} bytes; at most {MAX_ENVELOPE_BYTES:,})"])
    try:
        envelope = msgspec.json.decode(payload, type=Envelope)
    except msgspec.ValidationError as error:
        raise Rejected([f"envelope: expected {{\"config\": <TOML text>, \"id\", \"signature\"}}: {error}"]) from None
    except msgspec.DecodeError as error:
        raise Rejected([f"envelope: not JSON ({error})"]) from None
    if envelope.id and not _ID.fullmatch(envelope.id):
        raise Rejected([f"envelope.id: expected letters, digits, _ . - (at most 64), found {envelope.id[:80]!r}"])
    return envelope


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RemoteConfig:
    """Takes configs from the platform, applies them through the gateway's reload, watches
    health, rolls back, and reports (module docstring)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.section = gateway.config.remote_config
        self.dir = gateway.state_dir / "configs"
        self.key: Ed25519PublicKey | None = None
        if self.section.public_key_file:
            self.key, _ = load_public_key(self.section.public_key_file)  # checked by parse_config
        mqtt = [u.name for u in gateway.config.uplinks if u.type == "mqtt"]
        self.uplink_name = self.section.uplink or (mqtt[0] if mqtt else "")
        self.results: dict[str, int] = {}
        self.last_result: dict[str, Any] | None = None
        self._incoming: collections.deque[bytes] = collections.deque(maxlen=4)
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unpublished: bytes | None = None
        self._result_ready = asyncio.Event()
        self._seen = self._handled_digests()

    # -- which config wins ------------------------------------------------------------------

    @property
    def source(self) -> str:
        """`Config.source` of an adopted remote config (the `<id>.toml` it came from is named
        in active.json)."""
        return str(self.dir / "active.json")

    def _active(self) -> dict[str, Any] | None:
        try:
            marker = json.loads((self.dir / "active.json").read_text())
        except (OSError, ValueError):
            return None
        return marker if isinstance(marker, dict) and "local_sha256" in marker else None

    def _local_sha(self) -> str:
        try:
            return _sha256(Path(self.gateway.local_source).read_bytes())
        except OSError:
            return ""

    def _retire_active(self, why: str) -> None:
        marker = self._active()
        if marker is not None:
            log.info("remote_config_dropped", id=marker.get("id"), reason=why)
            (self.dir / "active.json").unlink(missing_ok=True)

    def startup_config(self) -> Config | None:
        """The remote config to start with instead of the local file's, if one is in force."""
        marker = self._active()
        if marker is None:
            return None
        local = self.gateway.config
        if marker["local_sha256"] != self._local_sha():
            self._retire_active("the local config file changed since; it wins")
            return None
        try:
            data = (self.dir / Path(str(marker.get("file", ""))).name).read_bytes()
            if _sha256(data) != marker.get("sha256"):
                # never start on text other than what passed its health check
                self._retire_active("its stored file is not the text that was applied")
                return None
            config = config_from_text(data, self.source)
        except (OSError, ConfigError) as error:
            restore_metrics(local)
            self._retire_active(f"cannot use it: {error}")
            return None
        if core_problems(local, config) or config.remote_config != local.remote_config:
            restore_metrics(local)
            self._retire_active("it no longer fits the local file's core sections")
            return None
        log.info("remote_config_in_force", id=marker.get("id"))
        return config

    def config_for_local_file(self, data: bytes, local: Config) -> Config:
        """SIGHUP: the running remote config while the local file is unchanged, else the file."""
        marker = self._active()
        if marker is not None and marker["local_sha256"] == _sha256(data) and self.gateway.config.source == self.source:
            restore_metrics(self.gateway.config)
            return self.gateway.config
        self._retire_active("the local config file was reloaded")
        return local

    # -- the MQTT side ----------------------------------------------------------------------

    def attach(self, uplink: Any) -> None:
        """Called for every uplink the gateway builds; subscribes on the configured one."""
        if uplink.ctx.name == self.uplink_name and hasattr(uplink, "watch_config"):
            uplink.watch_config(self.received)

    def received(self, payload: bytes) -> None:
        """A message on the config topic (event loop thread). Bounded: a flood keeps the last 4."""
        self._incoming.append(payload)
        self._arrived.set()

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tasks = [asyncio.create_task(self._worker(), name="remote-config"),
                       asyncio.create_task(self._republisher(), name="remote-config-results")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _worker(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._incoming:
                try:
                    await self.handle(self._incoming.popleft())
                except Exception as error:  # noqa: BLE001 - one push must not end remote configuration
                    log.error("remote_config_attempt_failed", reason=f"{type(error).__name__}: {error}",
                              note="the push is dropped; later pushes are handled")

    # -- one attempt ------------------------------------------------------------------------

    async def handle(self, payload: bytes) -> dict[str, Any] | None:
        """Check, apply, watch and keep or roll back one pushed config; None if seen before."""
        if not payload:
            return None  # the retained message was cleared
        digest = _sha256(payload)
        if digest in self._seen:
            return None
        self._seen.add(digest)
        record: dict[str, Any] = {"gateway": self.gateway.config.gateway.id, "id": digest[:16],
                                  "sha256": digest, "received": round(time.time(), 3)}
        try:
            new, text = self._check(payload, record)
        except Rejected as rejected:
            return self._finish(record, "rejected", rejected.reasons)
        except OSError as error:  # the state folder is full or read-only: nothing was applied
            return self._finish(record, "rejected", [f"cannot store it in {self.dir}: {error}"])
        async with self.gateway.reload_lock:
            previous = self.gateway.config
            since = self.gateway.clock() - self.section.health_timeout
            drivers = {s.ctx.name: s.ctx.readings for s in self.gateway.supervisors if s.ctx.last_seen >= since}
            uplinks = {r.name: r.forwarded_batches for r in self.gateway.runners}
            result = await self.gateway.apply_config(new, origin=f"remote config {record['id']}")
            record["changes"] = result.changes
            if not result.ok:
                return self._finish(record, "rejected", result.problems)
            reason = None
            if result.result == "applied":
                reason = await self._wait_healthy(drivers, uplinks)
            if reason is not None:
                back = await self.gateway.apply_config(previous, origin=f"rollback of {record['id']}")
                reasons = [reason] if back.ok else [reason, *(f"rollback: {p}" for p in back.problems)]
                return self._finish(record, "rolled_back", reasons)
            try:
                self._make_active(record, text)
            except OSError as error:
                # it runs and stays running; only the next start goes back to the local file
                return self._finish(record, "applied", [f"not kept for the next start: {error}"])
            return self._finish(record, "applied", [])

    def _check(self, payload: bytes, record: dict[str, Any]) -> tuple[Config, bytes]:
        envelope = decode_envelope(payload)
        if envelope.id:
            record["id"] = envelope.id
        text = envelope.config.encode()
        if envelope.signature:
            if self.key is None:
                record["signature"] = "not checked (no public_key_file)"
            else:
                self._verify(envelope.signature, text)
                record["signature"] = "valid"
        elif self.section.require_signature:
            raise Rejected(["unsigned: remote_config.require_signature is on; sign the TOML bytes "
                            "with the platform's Ed25519 key (envelope \"signature\", base64)"])
        self._store(record["id"], text)
        try:
            new = config_from_text(text, f"remote config {record['id']}")
        except ConfigError as error:
            restore_metrics(self.gateway.config)
            raise Rejected(error.problems) from None
        new.source = self.source  # what SIGHUP and the next start recognise it by
        if new.remote_config != self.gateway.config.remote_config:
            restore_metrics(self.gateway.config)
            raise Rejected(["remote_config: cannot be changed remotely (keys and switches are set on "
                            "the box); send the section as the box has it"])
        return new, text

    def _verify(self, signature: str, text: bytes) -> None:
        from cryptography.exceptions import InvalidSignature

        assert self.key is not None
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected(["signature: expected base64 (64 bytes of Ed25519 signature)"]) from None
        try:
            self.key.verify(raw, text)
        except InvalidSignature:
            raise Rejected(["signature: does not verify with remote_config.public_key_file "
                            "(signed by another key, or the config text was altered)"]) from None

    async def _wait_healthy(self, drivers: dict[str, int], uplinks: dict[str, int]) -> str | None:
        """None once healthy, else what was still missing at `health_timeout`."""
        timeout = self.section.health_timeout
        deadline = time.monotonic() + timeout
        while True:
            missing = []
            running = {s.ctx.name: s for s in self.gateway.supervisors}
            for name, before in drivers.items():
                supervisor = running.get(name)
                if supervisor is not None and supervisor.ctx.readings <= before:
                    missing.append(f"driver {name}: no reading")
            for runner in self.gateway.runners:
                if runner.forwarded_batches > uplinks.get(runner.name, 0):
                    continue
                backlog = await self.gateway.outbox_call(lambda ob, n=runner.name: ob.backlog(n))
                if not (runner.ctx.connected and backlog == 0 and runner.idle):
                    error = f" ({runner.last_error})" if runner.last_error else ""
                    missing.append(f"uplink {runner.name}: nothing acknowledged{error}")
            if not missing:
                return None
            if time.monotonic() >= deadline:
                return f"not healthy within {timeout:g} s: " + "; ".join(missing)
            await asyncio.sleep(0.1)  # poll the pipeline's counters

    # -- disk and reporting -----------------------------------------------------------------

    @staticmethod
    def _file_name(config_id: str, text: bytes) -> str:
        # the digest in the name: a later push that reuses an id never overwrites the text in force
        return f"{config_id}-{_sha256(text)[:12]}.toml"

    def _store(self, config_id: str, text: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / self._file_name(config_id, text)).write_bytes(text)
        active = (self._active() or {}).get("file")
        stored = sorted(self.dir.glob("*.toml"), key=lambda p: p.stat().st_mtime)
        for old in stored[: max(0, len(stored) - KEEP_CONFIGS)]:
            if old.name != active:
                old.unlink(missing_ok=True)

    def _make_active(self, record: dict[str, Any], text: bytes) -> None:
        marker = {"id": record["id"], "file": self._file_name(record["id"], text), "sha256": _sha256(text),
                  "local_sha256": self._local_sha(), "applied": round(time.time(), 3)}
        temporary = self.dir / "active.json.new"
        temporary.write_text(json.dumps(marker))
        temporary.replace(self.dir / "active.json")

    def _handled_digests(self) -> set[str]:
        try:
            lines = (self.dir / "results.jsonl").read_text().splitlines()
        except OSError:
            return set()
        seen = set()
        for line in lines:
            try:
                seen.add(str(json.loads(line)["sha256"]))
            except (ValueError, KeyError, TypeError):
                continue
        return seen

    def _finish(self, record: dict[str, Any], result: str, reasons: list[str]) -> dict[str, Any]:
        record.update(result=result, reasons=reasons, ts=round(time.time(), 3))
        self.results[result] = self.results.get(result, 0) + 1
        self.last_result = record
        line = json.dumps(record, separators=(",", ":"))
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / "results.jsonl"
            with open(path, "a") as out:
                out.write(line + "\n")
            lines = path.read_text().splitlines()
            if len(lines) > 2 * KEEP_RESULTS:
                path.write_text("\n".join(lines[-KEEP_RESULTS:]) + "\n")
        except OSError as error:
            log.error("remote_config_result_not_stored", reason=str(error))
        if result == "applied":
            log.info("remote_config_applied", id=record["id"], changes=record.get("changes", {}))
        else:
            log.error("remote_config_not_applied", result=result, id=record["id"], reasons=reasons)
        self._unpublished = line.encode()
        self._result_ready.set()
        return record

    async def _republisher(self) -> None:
        """Publish the latest result (retained); retried until the broker takes it."""
        while True:
            if self._unpublished is None:
                await self._result_ready.wait()
            self._result_ready.clear()
            payload = self._unpublished
            runner = next((r for r in self.gateway.runners if r.name == self.uplink_name), None)
            publish = getattr(runner.uplink, "publish_config_result", None) if runner else None
            if payload is not None and publish is not None:
                try:
                    await publish(payload)
                except UplinkError:
                    pass  # not connected now: tried again below
                else:
                    if self._unpublished is payload:
                        self._unpublished = None
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._result_ready.wait(), timeout=REPUBLISH_EVERY)

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily("edge_gateway_remote_configs", "Remote config attempts, by result",
                                     labels=["result"])
        for result in RESULTS:
            family.add_metric([result], self.results.get(result, 0))
        yield family
