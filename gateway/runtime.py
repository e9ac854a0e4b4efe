"""Wiring, supervision and shutdown: one asyncio loop runs the whole gateway (design.md).

    drivers --(ctx.emit)--> Aggregator --(tick: close, checkpoint)--> Outbox thread --> runners

- Drivers run under a supervisor: a driver that raises is restarted after an exponential backoff
  with jitter and never takes the process down.
- The tick loop closes due windows, gathers events, acknowledgements and (every `checkpoint`
  seconds) the dirty open windows, and commits them in one transaction on the outbox's own
  thread. A failed commit (disk full) is logged once per cause, counted, and folded into the next
  tick: nothing already stored is touched, nothing handed over is dropped.
- Priority events wake the tick loop at once.
- SIGTERM/SIGINT: drivers stopped, windows checkpointed, outbox committed, uplinks given the rest
  of `shutdown_timeout` to finish in-flight sends.
- systemd: READY=1 after start-up; WATCHDOG=1 only while ticks complete (the loop is alive and
  the outbox thread answers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway import loop_errors
from gateway.backoff import Backoff
from gateway.batch import KeyframeRecord
from gateway.config import Config
from gateway.driver import Driver, DriverContext
from gateway.errors import ConfigError, StorageError
from gateway.memory import release_free_heap
from gateway.metrics import PREFIX, Collector, MetricsRegistry, Samples, read_samples
from gateway.model import Event, metric
from gateway.outbox import Commit, Outbox, Restored, encode_checkpoint
from gateway.registry import load_driver, load_uplink
from gateway.reload import (
    ReloadCollector,
    ReloadPlan,
    ReloadResult,
    core_problems,
    plan_reload,
    read_config_file,
    restore_metrics,
)
from gateway.systemd import Notifier
from gateway.uplinks.base import UplinkContext
from gateway.uplinks.runner import UplinkRunner
from gateway.windows import Aggregator

__all__ = ["DriverSupervisor", "Gateway", "RuntimeMetrics", "Summary", "SupervisorMetrics"]

log = structlog.get_logger("runtime")

# A driver that ran this long before failing is considered to have recovered: backoff resets.
HEALTHY_RUN = 60.0
# Wall-clock steps larger than this between two ticks are counted as clock jumps (NTP sync).
CLOCK_STEP = 1.0
# A gap in the gateway's own time (downtime, a clock step forward) longer than this beyond one
# window ends every carried state at the gap: the platform is told the state is unknown there.
GAP_AFTER = 60.0
TRIM_EVERY = 60.0  # s between two malloc_trim calls (about a millisecond each)
# While the disk refuses writes, a failed commit is held in memory up to these bounds.
PENDING_RECORDS = 200_000
PENDING_EVENTS = 10_000
PENDING_CHECKPOINT_BYTES = 8 * 1024 * 1024
# systemd STATUS= (the line `systemctl status` shows) is refreshed this often (seconds).
STATUS_EVERY = 10.0
# Below this much free space in the state dir, an outbox that cannot open is waiting for space,
# not broken: SQLite needs room for its WAL and shared-memory files before it reads anything.
DISK_FULL_BELOW = 256 * 1024


class StoppedWhileWaiting(Exception):
    """SIGTERM arrived while the gateway waited for disk space to open its outbox."""


def disk_full(path: Any, error: BaseException) -> bool:
    """True when `error` (opening the outbox) comes from a full disk rather than a fault: the
    errno says so, or the state dir's file system has (almost) no space left. SQLite reports a
    WAL file it could not create as "disk I/O error", hence the second test."""
    cause = error.__cause__ or error
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "disk is full" in str(cause):
        return True
    try:
        return shutil.disk_usage(path).free < DISK_FULL_BELOW
    except OSError:
        return False


class DriverSupervisor:
    def __init__(self, driver: Driver[Any], ctx: DriverContext, backoff: Backoff) -> None:
        self.driver = driver
        self.ctx = ctx
        self.backoff = backoff
        self.restarts = 0
        self.running = False
        self.metrics = SupervisorMetrics(self)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            self.running = True
            try:
                await self.driver.run()
                reason = "run() returned"
            except asyncio.CancelledError:
                self.running = False
                await self._close()
                raise
            except Exception as error:  # noqa: BLE001 - a driver never takes the process down
                reason = f"{type(error).__name__}: {error}"
            self.running = False
            await self._close()
            if time.monotonic() - started >= HEALTHY_RUN:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            self.restarts += 1
            self.ctx.log.warning("driver_restarting", reason=reason, delay=round(delay, 2),
                                 note="the driver stopped; restarted after backoff")
            await asyncio.sleep(delay)

    async def _close(self) -> None:
        try:
            await asyncio.wait_for(self.driver.close(), timeout=5)
        except Exception as error:  # noqa: BLE001
            self.ctx.log.warning("driver_close_failed", error=str(error))


class SupervisorMetrics:
    """A supervised driver's restarts and whether it runs now, labelled `driver=<name>` (its
    readings and errors are its context's figures: gateway/driver.DriverMetrics)."""

    def __init__(self, supervisor: DriverSupervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        owner = [self.supervisor.ctx.name]
        restarts = CounterMetricFamily(PREFIX + "driver_restarts", "Driver restarts after a failure", labels=["driver"])
        restarts.add_metric(owner, self.supervisor.restarts)
        up = GaugeMetricFamily(PREFIX + "driver_up", "1 while the driver runs, 0 while it waits to restart",
                               labels=["driver"])
        up.add_metric(owner, 1.0 if self.supervisor.running else 0.0)
        yield from (restarts, up)


class RuntimeMetrics:
    """The tick loop's own figures: when it last committed, whether commits fail, priority events
    forwarded, clock steps and time gaps, records dropped while the disk refused writes."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        g = self.gateway
        yield GaugeMetricFamily(PREFIX + "last_tick_timestamp_seconds", "Last completed outbox commit tick (Unix s)",
                                value=g.last_tick)
        yield GaugeMetricFamily(PREFIX + "outbox_storage_failing", "1 while outbox commits fail and are retried",
                                value=1.0 if g.storage_failing else 0.0)
        for name, text, value in (
            ("events", "Priority events forwarded", g.events_in),
            ("clock_jumps", "Wall-clock steps larger than a tick (NTP sync)", g.clock_jumps),
            ("time_gaps", "Gaps in the gateway's own time (downtime, clock steps forward) "
             "that ended the carried states", g.time_gaps),
            ("held_records_dropped", "Closed windows and events dropped from memory while "
             "the disk refused writes for too long", g.held_records_dropped),
            ("outbox_write_errors", "Failed commits (disk full, I/O error)", g.storage_errors),
        ):
            yield CounterMetricFamily(PREFIX + name, text, value=value)


@dataclass
class Summary:
    readings: int
    windows_closed: int
    revisions: int
    late_dropped: int
    future_dropped: int
    decode_errors: int
    batches_written: int
    batches_forwarded: dict[str, int]
    records_forwarded: dict[str, int]
    evicted_batches: int
    outbox_batches: int
    outbox_path: str
    outputs: list[str]

    @classmethod
    def from_samples(cls, samples: Samples, *, outbox_path: str, outputs: list[str]) -> Summary:
        """The figures of a run as the gateway's registry holds them (what /metrics showed)."""

        def total(name: str) -> int:
            return int(sum(value for _, value in samples.get(PREFIX + name, [])))

        def by_uplink(name: str) -> dict[str, int]:
            return {labels["uplink"]: int(value) for labels, value in samples.get(PREFIX + name, [])}

        return cls(
            readings=total("readings_total"),
            windows_closed=total("windows_closed_total"),
            revisions=total("windows_revised_total"),
            late_dropped=total("late_dropped_total"),
            future_dropped=total("future_dropped_total"),
            decode_errors=total("decode_errors_total"),
            batches_written=total("outbox_batches_written_total"),
            batches_forwarded=by_uplink("uplink_forwarded_batches_total"),
            records_forwarded=by_uplink("uplink_forwarded_records_total"),
            evicted_batches=total("outbox_evicted_batches_total"),
            outbox_batches=total("outbox_batches"),
            outbox_path=outbox_path,
            outputs=outputs,
        )

    def render(self) -> str:
        fwd = ", ".join(f"{k}: {v} batches / {self.records_forwarded[k]} records" for k, v in self.batches_forwarded.items())
        return "\n".join(
            [
                "edge-gateway run summary",
                f"  readings in          {self.readings:>10,}",
                f"  decode errors        {self.decode_errors:>10,}",
                f"  windows closed       {self.windows_closed:>10,}",
                f"  revisions (late)     {self.revisions:>10,}",
                f"  dropped: too late    {self.late_dropped:>10,}",
                f"  dropped: future ts   {self.future_dropped:>10,}",
                f"  batches written      {self.batches_written:>10,}",
                f"  batches evicted      {self.evicted_batches:>10,}",
                f"  forwarded            {fwd}",
                f"  still in the outbox  {self.outbox_batches:>10,} batches ({self.outbox_path})",
                *[f"  output               {o}" for o in self.outputs],
            ]
        )


def _collectors(supervisors: list[DriverSupervisor], runners: list[UplinkRunner]) -> list[Collector]:
    """The metrics of these drivers (their contexts' and their supervisors') and uplinks."""
    return [*(c for s in supervisors for c in (s.ctx.metrics, s.metrics)), *(r.metrics for r in runners)]


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.state_dir = config.state_path
        w = config.windows
        self.aggregator = Aggregator(window=w.window, grace=w.grace, max_lateness=w.max_lateness)
        self.outbox = Outbox(
            self.state_dir / "outbox.sqlite",
            gateway_id=config.gateway.id,
            uplinks=[u.name for u in config.uplinks],
            window=w.window,
            max_lateness=w.max_lateness,
            max_bytes=config.outbox.max_bytes,
            batch_max_records=config.outbox.batch_max_records,
            clock=clock,
        )
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="outbox")
        # every component's metrics, in one registry: /metrics, the status views and the summary
        self.registry = MetricsRegistry()
        self.metrics = RuntimeMetrics(self)
        self.registry.register(self.metrics)
        self.registry.register(self.aggregator.metrics)
        self.registry.register(self.outbox.metrics)
        self.supervisors: list[DriverSupervisor] = []
        self.runners: list[UplinkRunner] = []
        self.events_in = 0
        self.clock_jumps = 0
        self.time_gaps = 0
        self.storage_errors = 0
        self._events: list[Event] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._pending: Commit | None = None
        # The tick and a reload (a stopped uplink's acknowledgements) both commit: one at a time,
        # or a second failure would overwrite the first one's pending commit and lose it.
        self._commit_lock = asyncio.Lock()
        self._logged_storage: set[str] = set()
        self.last_tick = 0.0  # wall time of the last completed tick (for /metrics)
        self.last_tick_mono = time.monotonic()
        self.held_records_dropped = 0
        self._persisted_boundary = -(2**62)  # the close boundary the outbox last committed
        self._tick_clocks: tuple[float, float] | None = None  # (wall, monotonic) at the last tick
        self._next_keyframe = 0.0  # monotonic time of the next keyframe: the first tick sends one
        self.health: Any = None
        self.status_board: Any = None
        self.backlog_probe: Any = None  # gateway.status.OutboxProbe, made at start-up
        self.loop_errors: loop_errors.LoopErrorHandler | None = None
        # reloads (gateway/reload.py): the live task lists, reload counts by result
        self._driver_tasks: list[asyncio.Task[None]] = []
        self._runner_tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        self._reload_tasks: set[asyncio.Task[Any]] = set()
        self._running = False
        self.reloads: dict[str, int] = {}
        self.config_applied_at = 0.0
        self.remote_config: Any = None
        # the file SIGHUP re-reads: the one started with, even while a remote config runs
        self.local_source = config.source

    # -- plumbing ---------------------------------------------------------------------------

    async def outbox_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(outbox, *args)` on the outbox thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self.outbox, *args)

    def submit_event(self, event: Event) -> None:
        self.events_in += 1
        self._events.append(event)
        self._wake.set()

    def request_stop(self) -> None:
        self._stop.set()

    def _build_drivers(self) -> None:
        for settings in self.config.drivers:
            self.supervisors.append(self._make_supervisor(settings))
        self.registry.replace([], _collectors(self.supervisors, []))

    def _build_uplinks(self) -> None:
        for settings in self.config.uplinks:
            self.runners.append(self._make_runner(settings))
        self.registry.replace([], _collectors([], self.runners))

    def _make_supervisor(self, settings: Any, config: Config | None = None) -> DriverSupervisor:
        rt = (config or self.config).runtime
        ctx = DriverContext(
            settings.name,
            gateway_id=self.config.gateway.id,
            state_dir=self.state_dir / "drivers" / settings.name,
            submit=self.aggregator.add,
            submit_event=self.submit_event,
            clock=self.clock,
        )
        driver_class = load_driver(settings.type)
        driver = driver_class(settings, ctx)
        return DriverSupervisor(driver, ctx, Backoff(rt.restart_backoff_initial, rt.restart_backoff_max))

    def _make_runner(self, settings: Any, config: Config | None = None) -> UplinkRunner:
        rt = (config or self.config).runtime
        ctx = UplinkContext(settings.name, gateway_id=self.config.gateway.id, state_dir=str(self.state_dir))
        uplink = load_uplink(settings.type)(settings, ctx)
        if self.remote_config is not None:
            self.remote_config.attach(uplink)
        return UplinkRunner(
            uplink, ctx, self.outbox_call, backoff=Backoff(rt.restart_backoff_initial, rt.restart_backoff_max)
        )

    # -- the tick ---------------------------------------------------------------------------

    async def _tick(self, *, checkpoint: bool, flush: bool = False, acks: bool = False) -> None:
        now = self.clock()
        mono = time.monotonic()
        if self._tick_clocks is not None:
            # wall time that passed minus real time that passed: a step of the clock itself
            step = (now - self._tick_clocks[0]) - (mono - self._tick_clocks[1])
            if abs(step) > CLOCK_STEP:
                self.clock_jumps += 1
                log.warning("clock_stepped", step_seconds=round(step, 3), note="wall clock stepped (NTP sync?)")
                if step > self._gap_limit():
                    self._mark_gap(self.aggregator.closed_before, reason="clock_step")
        self._tick_clocks = (now, mono)
        close = self.aggregator.flush_all() if flush else self.aggregator.close_due(now)
        moved = close.closed_before != self._persisted_boundary
        commit = Commit(now=now, close=close if (close or flush or moved) else None)
        if self._events:
            commit.events, self._events = self._events, []
        # Acknowledgements ride along with a commit that happens anyway (a close, events, the
        # checkpoint): a commit of its own per acknowledged batch was most of the SD card's
        # writes. Until then the runner keeps them (and does not resend); after a crash those
        # batches are sent again, which at-least-once delivery allows.
        if acks or commit.close is not None or commit.events or checkpoint or flush:
            for runner in self.runners:
                acknowledged, dead = runner.take_acks()
                if acknowledged:
                    commit.acks[runner.name] = acknowledged
                commit.dead.extend(dead)
        if checkpoint or flush:
            row = encode_checkpoint(self.aggregator.dirty_open())
            if row is not None:
                commit.checkpoints.append(row)
        if close:
            # carried values change only when windows close: stored in the same transaction
            commit.carry = self.aggregator.carry_changes()
            if mono >= self._next_keyframe:
                self._next_keyframe = mono + self.config.windows.keyframe_interval
                commit.keyframe = self._keyframe()
        await self._commit(commit)

    def _gap_limit(self) -> float:
        return self.config.windows.window + GAP_AFTER

    def _mark_gap(self, first_unknown: int, *, reason: str) -> None:
        ended = self.aggregator.end_carry_at_gap(first_unknown)
        self.time_gaps += 1
        log.warning("time_gap", reason=reason, first_unknown_window=first_unknown, states_ended=ended,
                    note="carried states are reported unknown from here until their next reading")

    def _keyframe(self) -> list[KeyframeRecord]:
        return [
            KeyframeRecord(device=key[0], metric=key[1], unit=metric(key[1]).unit, since=ts, state=state)
            for key, ts, state in self.aggregator.carried_states()
        ]

    async def _commit(self, commit: Commit) -> None:
        # Shielded: the windows and events in a commit have already left the aggregator, so a
        # tick cancelled at shutdown (its time up while the SD card stalls) must not drop it; the
        # final tick's commit waits for it on the lock and folds it in if it failed.
        await asyncio.shield(self._commit_in_turn(commit))

    async def _commit_in_turn(self, commit: Commit) -> None:
        async with self._commit_lock:
            if self._pending is not None:
                commit.merge_from(self._pending)
                self._pending = None
            if not commit:
                self._ticked(commit.now)
                return
            try:
                report = await self.outbox_call(Outbox.commit, commit)
            except StorageError as error:
                self.storage_errors += 1
                self._pending = self._bounded(commit)
                reason = str(error)
                if reason not in self._logged_storage:
                    self._logged_storage.add(reason)
                    log.error("outbox_commit_failed", reason=reason,
                              note="kept in memory (bounded) and retried every tick")
            else:
                if commit.close is not None:
                    self._persisted_boundary = commit.close.closed_before
                if self._logged_storage:
                    log.info("outbox_commits_recovered")
                    self._logged_storage.clear()
                if report.batches or report.deleted or report.evicted_batches:
                    for runner in self.runners:
                        runner.wake.set()
            self._ticked(commit.now)

    def _ticked(self, now: float) -> None:
        """A tick completed, its commit stored or held: the loop and the outbox thread answer.
        A disk that refuses writes (full) is degraded, not dead: the watchdog stays fed; a
        disk that hangs stops the ticks and so the watchdog."""
        self.last_tick = now
        self.last_tick_mono = time.monotonic()

    def _bounded(self, commit: Commit) -> Commit:
        """What a failed commit may keep in memory while the disk refuses writes: closed window
        records up to PENDING_RECORDS (the oldest dropped beyond, counted and logged once, like
        evictions) and open-window checkpoints up to PENDING_CHECKPOINT_BYTES (beyond, they are
        replaced by one full checkpoint at the next checkpoint tick)."""
        if sum(len(blob) for _, blob in commit.checkpoints) > PENDING_CHECKPOINT_BYTES:
            commit.checkpoints = []
            self.aggregator.mark_all_dirty()
        close = commit.close
        if close is not None and len(close.closed) + len(close.late) > PENDING_RECORDS:
            excess = len(close.closed) + len(close.late) - PENDING_RECORDS
            dropped = close.closed[:excess]
            close.closed = close.closed[excess:]
            self.held_records_dropped += len(dropped)
            if "held_records_dropped" not in self._logged_storage:
                self._logged_storage.add("held_records_dropped")
                log.error("held_records_dropped", records=len(dropped), held=PENDING_RECORDS,
                          note="the disk refused writes for so long that the oldest closed windows "
                               "held in memory were dropped (counted in held_records_dropped)")
        if len(commit.events) > PENDING_EVENTS:
            self.held_records_dropped += len(commit.events) - PENDING_EVENTS
            commit.events = commit.events[-PENDING_EVENTS:]
        return commit

    async def _tick_loop(self) -> None:
        interval = self.config.outbox.commit_interval
        checkpoint_every = self.config.windows.checkpoint
        next_checkpoint = time.monotonic() + checkpoint_every
        next_trim = time.monotonic() + TRIM_EVERY
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            due = time.monotonic() >= next_checkpoint
            if due:
                next_checkpoint = time.monotonic() + checkpoint_every
            await self._tick(checkpoint=due)
            if time.monotonic() >= next_trim:  # freed heap back to the kernel (gateway.memory)
                next_trim = time.monotonic() + TRIM_EVERY
                release_free_heap()

    @property
    def storage_failing(self) -> bool:
        """True while outbox commits fail and their content is held in memory."""
        return self._pending is not None

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval
        if not self.notifier.enabled:
            return
        next_status = 0.0
        while True:
            await asyncio.sleep(min(interval / 2, STATUS_EVERY) if interval else STATUS_EVERY)
            # monotonic: a clock step must neither starve nor fake the watchdog
            if interval and time.monotonic() - self.last_tick_mono < interval:
                self.notifier.notify("WATCHDOG=1")
            if time.monotonic() >= next_status and self.status_board is not None:
                next_status = time.monotonic() + STATUS_EVERY
                from gateway.status import one_line

                status = await asyncio.to_thread(self.status_board.status)
                self.notifier.notify(f"STATUS={one_line(status)}")

    # -- lifecycle --------------------------------------------------------------------------

    async def _open_outbox(self) -> Restored:
        """Open the outbox; on a full disk, wait for space instead of exiting.

        A gateway restarted by systemd on a still-full disk would otherwise exit and be
        restarted in a loop. While it waits it is up but degraded: READY=1 with a STATUS that
        says why, WATCHDOG=1 kept (no progress only because of the disk), one log line, and
        SIGTERM ends it at once. Nothing is read from the devices until the outbox opens:
        without it the gateway knows neither its stream nor its next batch number."""
        backoff = Backoff(1.0, 30.0)
        waiting_since = 0.0
        while True:
            try:
                restored: Restored = await self.outbox_call(Outbox.open)
            except StorageError as error:
                if not disk_full(self.state_dir, error):
                    raise
                if not waiting_since:
                    waiting_since = time.monotonic()
                    self.storage_errors += 1
                    log.error("outbox_disk_full_at_start", state_dir=str(self.state_dir), error=str(error),
                              note="waiting for space; checking again with backoff up to 30 s")
                    self.notifier.notify("READY=1", f"STATUS=degraded: disk full in {self.state_dir}, "
                                                    "waiting for space to open the outbox")
            else:
                if waiting_since:
                    log.info("outbox_opened_after_disk_full", waited_s=round(time.monotonic() - waiting_since, 1))
                return restored
            delay = backoff.next_delay()
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                self.notifier.notify("WATCHDOG=1")
                step = min(deadline - time.monotonic(), self.notifier.watchdog_interval / 2 or delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=max(step, 0.0))
                if self._stop.is_set():
                    raise StoppedWhileWaiting()

    async def start(self) -> None:
        restored = await self._open_outbox()
        resumed = self.aggregator.restore(restored.closed_before, restored.open_rows, restored.carry)
        self._persisted_boundary = restored.closed_before
        now = self.clock()
        # the last close boundary stands for the last time this gateway was running
        if restored.carry and now - (restored.closed_before + self.config.windows.grace) > self._gap_limit():
            self._mark_gap(restored.closed_before, reason="downtime")
        self.aggregator.advance(now)
        self._build_drivers()
        self._build_uplinks()
        from gateway.health import HealthServer, StatusBoard
        from gateway.status import OutboxProbe

        self.backlog_probe = OutboxProbe(self.outbox.path, [u.name for u in self.config.uplinks])
        self.registry.register(self.backlog_probe)
        self.registry.register(ReloadCollector(self))
        self.status_board = StatusBoard(self.registry, self.config.gateway.id)
        if self.config.health.listen:
            self.health = HealthServer(self.status_board, self.config.health.listen)
            self.health.start()
        log.info(
            "gateway_started",
            gateway=self.config.gateway.id,
            config=self.config.source,
            state_dir=str(self.state_dir),
            stream=restored.stream,
            resumed_open_windows=resumed,
            drivers=[s.ctx.name for s in self.supervisors],
            uplinks=[r.name for r in self.runners],
            metrics=f"http://{self.config.health.listen}/metrics" if self.health else "off",
        )

    async def run(self, duration: float | None = None, *, drain: bool = False) -> Summary:
        """Run until SIGTERM/SIGINT (or `duration` seconds); `drain` closes every window at the
        end and waits for the uplinks to deliver them (bounded demos and tests)."""
        loop = asyncio.get_running_loop()
        # an exception raised on every loop turn is logged once per cause, not once per turn
        self.loop_errors = loop_errors.install(loop)
        self.registry.register(self.loop_errors.metrics)
        # before start-up: a SIGTERM while the outbox opens must still end in a clean stop
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self._before_start()
        try:
            await self.start()
        except StoppedWhileWaiting:
            log.info("gateway_stopped", reason="stopped while waiting for disk space; nothing was read")
            self.notifier.notify("STOPPING=1")
            self._executor.shutdown(wait=False)
            return self.summary()
        tasks = [asyncio.create_task(s.run(), name=f"driver:{s.ctx.name}") for s in self.supervisors]
        runner_tasks = [asyncio.create_task(r.run(), name=f"uplink:{r.name}") for r in self.runners]
        self._after_start(tasks, runner_tasks)
        tick_task = asyncio.create_task(self._tick_loop(), name="tick")
        watchdog = asyncio.create_task(self._watchdog_loop(), name="watchdog")
        self.notifier.notify("READY=1", f"STATUS=running {len(tasks)} drivers, {len(runner_tasks)} uplinks")
        try:
            stop_wait = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stop_wait, tick_task], timeout=duration, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if tick_task.done() and tick_task.exception():
                raise tick_task.exception()  # type: ignore[misc]
        finally:
            await self._stop_reloads()
            await self._shutdown(tasks, runner_tasks, tick_task, watchdog, drain=drain)
        return self.summary()

    async def _shutdown(
        self,
        drivers: list[asyncio.Task[None]],
        runner_tasks: list[asyncio.Task[None]],
        tick_task: asyncio.Task[None],
        watchdog: asyncio.Task[None],
        *,
        drain: bool,
    ) -> None:
        deadline = time.monotonic() + self.config.runtime.shutdown_timeout
        self.notifier.notify("STOPPING=1")
        self._stop.set()
        for task in (*drivers, watchdog):
            task.cancel()
        await asyncio.gather(*drivers, watchdog, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(tick_task, timeout=max(0.1, deadline - time.monotonic()))
        # final tick: checkpoint open windows (or close them all when draining) and commit
        await self._tick(checkpoint=True, flush=drain)
        if drain:
            await self._drain(deadline)
        for runner in self.runners:
            await runner.stop(max(0.1, min(2.0, deadline - time.monotonic())))
        for task in runner_tasks:
            task.cancel()
        await asyncio.gather(*runner_tasks, return_exceptions=True)
        await self._tick(checkpoint=True)  # commit the last acknowledgements
        if self.health is not None:
            self.health.stop()
        await self.outbox_call(Outbox.close)
        self._executor.shutdown(wait=True)
        self.notifier.close()
        log.info("gateway_stopped")

    async def _drain(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            backlog = await self.outbox_call(lambda ob: sum(ob.backlog(r.name) for r in self.runners))
            if not backlog and all(r.idle for r in self.runners):
                return
            for runner in self.runners:
                runner.wake.set()
            await asyncio.sleep(0.05)
            await self._tick(checkpoint=False, acks=True)

    # -- reload (gateway/reload.py; SIGHUP and remote configs) --------------------------------

    def _before_start(self) -> None:
        """A remote config accepted earlier replaces the local file's while that file is
        unchanged (gateway/remote_config.py); only uplink names reach the unopened outbox."""
        if self.config.remote_config.enabled:
            from gateway.remote_config import RemoteConfig

            self.remote_config = RemoteConfig(self)
            adopted = self.remote_config.startup_config()
            if adopted is not None:
                self.config = adopted
                self.outbox.uplinks = [u.name for u in adopted.uplinks]
        self.config_applied_at = time.time()

    def _after_start(self, tasks: list[asyncio.Task[None]], runner_tasks: list[asyncio.Task[None]]) -> None:
        # the same list objects _shutdown() gets: a reload edits them in place
        self._driver_tasks, self._runner_tasks = tasks, runner_tasks
        self._running = True
        if self.remote_config is not None:
            self.remote_config.start()

    async def _stop_reloads(self) -> None:
        self._running = False
        if self.remote_config is not None:
            await self.remote_config.stop()
        if self._reload_tasks:
            _, late = await asyncio.wait(list(self._reload_tasks), timeout=10)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file, in a task (a signal handler must return at once)."""
        if not self._running or self._stop.is_set():
            log.warning("reload_ignored", note="a reload was requested before start-up finished or while stopping")
            return
        task = asyncio.create_task(self.reload(), name="reload")
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    @property
    def reload_lock(self) -> asyncio.Lock:
        """Held by every reload; a remote config holds it through its health check."""
        return self._reload_lock

    async def reload(self, new: Config | None = None, *, origin: str = "sighup") -> ReloadResult:
        """Apply `new`, or the config file re-read; never raises for a bad config."""
        async with self._reload_lock:
            if new is None:
                source = self.config.source
                if source.startswith("<") or self.remote_config is not None and source == self.remote_config.source:
                    source = self.local_source
                if source.startswith("<"):
                    return self._reloaded(origin, ReloadResult(
                        "failed", [f"started with the {source.strip('<>')} config: there is no file to re-read"]))
                try:
                    data, new = read_config_file(source)
                except ConfigError as error:
                    restore_metrics(self.config)
                    return self._reloaded(origin, ReloadResult("invalid", error.problems))
                if self.remote_config is not None:
                    new = self.remote_config.config_for_local_file(data, new)
            return await self.apply_config(new, origin=origin)

    async def apply_config(self, new: Config, *, origin: str) -> ReloadResult:
        """Apply a validated config; the caller holds `reload_lock`. Refused (nothing changed)
        when a key that cannot change live differs."""
        if self._stop.is_set():
            return self._reloaded(origin, ReloadResult("failed", ["the gateway is stopping"]))
        problems = core_problems(self.config, new)
        if problems:
            restore_metrics(self.config)
            return self._reloaded(origin, ReloadResult("refused", problems))
        plan = plan_reload(self.config, new)
        if not plan:
            self.config = new
            return self._reloaded(origin, ReloadResult("unchanged"))
        try:
            # build everything first: a constructor that fails leaves the running set untouched
            drivers = {s.name: s for s in new.drivers}
            uplinks = {s.name: s for s in new.uplinks}
            built_supervisors = [self._make_supervisor(drivers[n], new) for n in plan.start_drivers]
            built_runners = [self._make_runner(uplinks[n], new) for n in plan.start_uplinks]
        except Exception as error:  # noqa: BLE001 - a plugin failing to build is reported, not fatal
            restore_metrics(self.config)
            return self._reloaded(origin, ReloadResult("failed", [f"{type(error).__name__}: {error}"]))
        await self._replace_parts(new, plan, built_supervisors, built_runners)
        old, self.config = self.config, new
        await self._apply_sections(old, new, plan)
        self.config_applied_at = time.time()
        return self._reloaded(origin, ReloadResult("applied", changes=plan.describe()))

    async def _replace_parts(
        self, new: Config, plan: ReloadPlan, supervisors: list[DriverSupervisor], runners: list[UplinkRunner]
    ) -> None:
        old_supervisors = {s.ctx.name: s for s in self.supervisors}
        for name in plan.stop_drivers:
            await self._stop_task(self._driver_tasks, f"driver:{name}")
        for supervisor in supervisors:
            # counters carry over a restart: Prometheus sees no reset, the summary no loss
            previous = old_supervisors.get(supervisor.ctx.name)
            if previous is not None:
                supervisor.ctx.readings += previous.ctx.readings
                supervisor.ctx.events += previous.ctx.events
                supervisor.ctx.decode_errors.update(previous.ctx.decode_errors)
                supervisor.ctx.counters.update(previous.ctx.counters)
                supervisor.restarts = previous.restarts
        kept = {n: s for n, s in old_supervisors.items() if n not in plan.stop_drivers}
        kept.update((s.ctx.name, s) for s in supervisors)
        running = [kept[s.name] for s in new.drivers]
        self.registry.replace(_collectors(self.supervisors, []), _collectors(running, []))
        self.supervisors = running

        old_runners = {r.name: r for r in self.runners}
        stopping = [old_runners[n] for n in plan.stop_uplinks]
        grace = min(5.0, new.runtime.shutdown_timeout)
        await asyncio.gather(*(runner.stop(grace) for runner in stopping))
        for runner in stopping:
            await self._stop_task(self._runner_tasks, f"uplink:{runner.name}")
        kept_runners = {n: r for n, r in old_runners.items() if n not in plan.stop_uplinks}
        kept_runners.update((r.name, r) for r in runners)
        for runner in runners:
            before = old_runners.get(runner.name)
            if before is not None:
                runner.forwarded_batches = before.forwarded_batches
                runner.forwarded_records = before.forwarded_records
                runner.failures = before.failures
                runner.dead_lettered = before.dead_lettered
        sending = [kept_runners[u.name] for u in new.uplinks]
        self.registry.replace(_collectors([], self.runners), _collectors([], sending))
        self.runners = sending
        if self.backlog_probe is not None:
            self.backlog_probe.uplinks = [u.name for u in new.uplinks]
        # what the stopped runners had acknowledged since the last tick, then the new cursor set
        commit = Commit(now=self.clock())
        for runner in stopping:
            acknowledged, dead = runner.take_acks()
            if acknowledged:
                commit.acks[runner.name] = acknowledged
            commit.dead.extend(dead)
        await self._commit(commit)
        await self.outbox_call(Outbox.set_uplinks, [u.name for u in new.uplinks])
        for supervisor in supervisors:
            self._driver_tasks.append(asyncio.create_task(supervisor.run(), name=f"driver:{supervisor.ctx.name}"))
        for runner in runners:
            self._runner_tasks.append(asyncio.create_task(runner.run(), name=f"uplink:{runner.name}"))
            runner.wake.set()

    @staticmethod
    async def _stop_task(tasks: list[asyncio.Task[None]], name: str) -> None:
        for task in [t for t in tasks if t.get_name() == name]:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            tasks.remove(task)

    async def _apply_sections(self, old: Config, new: Config, plan: ReloadPlan) -> None:
        """health, log and remote_config changes; runtime.* applies to parts started from now on."""
        if "log" in plan.other:
            from gateway.logs import configure_logging

            configure_logging(new.log.level, new.log.format)
        if "health" in plan.other:
            await self._restart_health(old)
        if "remote_config" in plan.other:
            if self.remote_config is not None:
                await self.remote_config.stop()
                self.remote_config = None
            if new.remote_config.enabled:
                from gateway.remote_config import RemoteConfig

                self.remote_config = RemoteConfig(self)
                for runner in self.runners:
                    self.remote_config.attach(runner.uplink)
                self.remote_config.start()

    async def _restart_health(self, old: Config) -> None:
        """The listener again, on the same status board (a reload changes the registry's parts,
        never the board); it keeps its port when `health.listen` did not change."""
        from gateway.health import HealthServer

        listen = self.config.health.listen
        if self.health is not None:
            if listen == old.health.listen:
                host = self.health.host
                listen = f"[{host}]:{self.health.port}" if ":" in host else f"{host}:{self.health.port}"
            await asyncio.to_thread(self.health.stop)
            self.health = None
        if listen:
            server = HealthServer(self.status_board, listen)
            try:
                await asyncio.to_thread(server.start)
            except OSError as error:
                log.error("health_listener_failed", reason=str(error), note="the health listener did not restart after a reload")
            else:
                self.health = server

    def _reloaded(self, origin: str, result: ReloadResult) -> ReloadResult:
        self.reloads[result.result] = self.reloads.get(result.result, 0) + 1
        if result.ok:
            log.info("config_reloaded" if result.result == "applied" else "config_unchanged",
                     origin=origin, config=self.config.source, **result.changes)
        else:
            log.error("config_reload_refused", note="the running config stays", origin=origin, result=result.result,
                      problems=result.problems)
        return result

    def summary(self) -> Summary:
        """The run's figures from the gateway's registry (the components' own metrics) and
        where the file uplinks wrote."""
        outputs = []
        for r in self.runners:
            current = getattr(r.uplink, "current", None)
            if current is not None:
                outputs.append(f"{r.name}: {current}")
        return Summary.from_samples(read_samples(self.registry), outbox_path=str(self.outbox.path), outputs=outputs)
