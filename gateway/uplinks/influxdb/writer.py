"""InfluxDB uplink: one batch is one `POST /api/v2/write`, acknowledged by a 2xx answer.

Why not influxdb-client's WriteApi: its asyncio API needs aiohttp (not a dependency), and its
synchronous API brings its own batching thread and retry policy, while here the runner already
owns batching (the outbox), retries, backoff and dead letters. So the lines come from the
client's `Point` builder (`lines`) and the write is a plain urllib3 request (urllib3 is
influxdb-client's own transport) run in a worker thread, keeping the status codes and the
Retry-After header in our hands:

    2xx                 acknowledged
    413                 too large: split the lines in halves and write each (recursively); a
                        single line still too large is rejected
    429, 503            UplinkUnavailable(retry_after=Retry-After seconds or HTTP date)
    408, other 5xx      UplinkUnavailable
    401, 403, 404       UplinkUnavailable: a wrong token, URL or bucket is a configuration fault
                        of the link, not of the batch; dead-lettering would empty the outbox
    other 4xx           BatchRejected (the batch goes to the dead-letter table)
    no HTTP answer      UplinkUnavailable (refused, reset, timeout, garbage instead of HTTP)

Writes are idempotent at the server (same series and timestamp overwrite), so re-sending a batch
after a partial success or a lost answer does no harm.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import ssl
import time
from typing import Final, NoReturn
from urllib.parse import urlencode

import urllib3

from gateway.batch import Batch
from gateway.errors import BatchRejected, UplinkUnavailable
from gateway.uplinks.base import Uplink, UplinkContext
from gateway.uplinks.influxdb import Config
from gateway.uplinks.influxdb.lines import PRECISION, document_lines

__all__ = ["InfluxUplink", "parse_retry_after"]

_LINK_FAULTS: Final[dict[int, tuple[str, str]]] = {
    401: ("unauthorized", "unauthorized: check the token"),
    403: ("forbidden", "forbidden: the token may not write this bucket"),
    404: ("not_found", "not found: check the url and bucket"),
    408: ("request_timeout", "request timeout"),
}
_BUSY: Final = frozenset({429, 503})
_MAX_ERROR_BODY: Final = 300


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class _Answer:
    __slots__ = ("body", "retry_after", "sent", "status")

    def __init__(self, status: int, body: bytes, retry_after: str | None, sent: int) -> None:
        self.status, self.body, self.retry_after, self.sent = status, body, retry_after, sent


class InfluxUplink(Uplink[Config]):
    type_name = "influxdb"

    def __init__(self, config: Config, ctx: UplinkContext) -> None:
        super().__init__(config, ctx)
        query = {"bucket": config.bucket, "precision": PRECISION}
        if config.org:
            query["org"] = config.org
        self.write_url = f"{config.url.rstrip('/')}/api/v2/write?{urlencode(query)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if config.token:
            self._headers["Authorization"] = f"Token {config.token}"
        if config.gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._pool: urllib3.PoolManager | None = None

    async def start(self) -> None:
        if self._pool is None:
            kwargs: dict[str, object] = {"num_pools": 2, "maxsize": max(1, self.config.max_in_flight),
                                         "retries": False}
            if self.config.ca_file:
                kwargs["ssl_context"] = ssl.create_default_context(cafile=self.config.ca_file)
            self._pool = urllib3.PoolManager(**kwargs)  # type: ignore[arg-type]

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.clear()

    async def send(self, batch: Batch) -> None:
        await self.start()
        try:
            document = batch.document()
        except Exception as error:  # noqa: BLE001 - msgspec's DecodeError/ValidationError
            raise BatchRejected(f"batch {batch.seq} is not a valid document: {error}") from None
        # Building the lines is pure CPU: a worker thread keeps the event loop responsive on a Pi.
        lines = await asyncio.to_thread(document_lines, document,
                                        prefix=self.config.measurement_prefix, tags=self.config.tags)
        if lines:
            await self._write(lines)
        self.ctx.connected = True

    async def _write(self, lines: list[bytes]) -> None:
        answer = await asyncio.to_thread(self._post, lines)
        if isinstance(answer, tuple):
            self._fail(*answer)
        status = answer.status
        if 200 <= status < 300:
            self.ctx.count("points_written", len(lines))
            self.ctx.count("request_bytes", answer.sent)
            return
        detail = answer.body[:_MAX_ERROR_BODY].decode("utf-8", "replace").strip()
        if status == 413:
            self.ctx.count("split_413")
            if len(lines) == 1:
                raise BatchRejected(f"a single line is too large for the server: {detail}",
                                    status=status)
            half = len(lines) // 2
            await self._write(lines[:half])
            await self._write(lines[half:])
            return
        if status in _BUSY:
            retry_after = parse_retry_after(answer.retry_after, time.time())
            self._fail(f"busy_{status}", f"server busy (HTTP {status}), honouring Retry-After",
                       retry_after)
        if status in _LINK_FAULTS:
            cause, text = _LINK_FAULTS[status]
            self._fail(cause, f"HTTP {status} {text}: {detail}")
        if 400 <= status < 500:
            self.ctx.count(f"rejected_{status}")
            raise BatchRejected(f"HTTP {status}: {detail}", status=status)
        self._fail(f"http_{status}", f"HTTP {status}: {detail}")

    def _post(self, lines: list[bytes]) -> _Answer | tuple[str, str]:
        """Worker thread: compression and the blocking HTTP request. Returns the answer, or
        (cause, text) when no HTTP answer came; counting and logging happen on the event loop."""
        body = b"\n".join(lines)
        if self.config.gzip:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        pool = self._pool
        if pool is None:
            return "stopped", "uplink stopped"
        try:
            response = pool.request(
                "POST", self.write_url, body=body, headers=self._headers,
                timeout=urllib3.Timeout(total=self.config.timeout), retries=False,
                preload_content=True,
            )
        except urllib3.exceptions.ProtocolError as error:
            return "bad_answer", f"no valid HTTP answer ({error})"
        except urllib3.exceptions.SSLError as error:
            return "tls_error", f"TLS failed: {error}"
        # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
        except urllib3.exceptions.NewConnectionError as error:
            return "connection_refused", f"cannot connect ({error.__cause__ or error})"
        except urllib3.exceptions.TimeoutError:
            return "timeout", f"no answer within {self.config.timeout:g} s"
        except urllib3.exceptions.HTTPError as error:
            return "http_error", f"{type(error).__name__}: {error}"
        return _Answer(response.status, response.data or b"", response.headers.get("Retry-After"),
                       len(body))

    def _fail(self, cause: str, text: str, retry_after: float | None = None) -> NoReturn:
        """Count the failure as `write_failed_<cause>` and raise UplinkUnavailable; its reason
        is the clear log line, logged by the runner once per reason until the next success."""
        self.ctx.count(f"write_failed_{cause}")
        self.ctx.connected = False
        message = f"influxdb write to {self.config.url} failed: {text}"
        self.ctx.log.debug("write_failed", reason=message, cause=cause)
        raise UplinkUnavailable(message, retry_after=retry_after)
