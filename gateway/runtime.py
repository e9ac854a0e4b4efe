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
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gateway import loop_errors
from gateway.backoff import Backoff
from gateway.batch import KeyframeRecord
from gateway.config import Config
from gateway.driver import Driver, DriverContext
from gateway.errors import StorageError
from gateway.model import Event, metric
from gateway.outbox import Commit, Outbox, encode_checkpoint
from gateway.registry import driver_module, uplink_module
from gateway.systemd import Notifier
from gateway.uplinks.base import UplinkContext
from gateway.uplinks.runner import UplinkRunner
from gateway.windows import Aggregator

__all__ = ["DriverSupervisor", "Gateway", "Summary"]

log = structlog.get_logger("runtime")

# A driver that ran this long before failing is considered to have recovered: backoff resets.
HEALTHY_RUN = 60.0
# Wall-clock steps larger than this between two ticks are counted as clock jumps (NTP sync).
CLOCK_STEP = 1.0
# A gap in the gateway's own time (downtime, a clock step forward) longer than this beyond one
# window ends every carried state at the gap: the platform is told the state is unknown there.
GAP_AFTER = 60.0
# While the disk refuses writes, a failed commit is held in memory up to these bounds.
PENDING_RECORDS = 200_000
PENDING_EVENTS = 10_000
PENDING_CHECKPOINT_BYTES = 8 * 1024 * 1024
# systemd STATUS= (the line `systemctl status` shows) is refreshed this often (seconds).
STATUS_EVERY = 10.0


class DriverSupervisor:
    def __init__(self, driver: Driver[Any], ctx: DriverContext, backoff: Backoff) -> None:
        self.driver = driver
        self.ctx = ctx
        self.backoff = backoff
        self.restarts = 0
        self.running = False

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
            self.ctx.log.warning("driver stopped; restarting after backoff", reason=reason, delay=round(delay, 2))
            await asyncio.sleep(delay)

    async def _close(self) -> None:
        try:
            await asyncio.wait_for(self.driver.close(), timeout=5)
        except Exception as error:  # noqa: BLE001
            self.ctx.log.warning("driver close failed", error=str(error))


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
        self._logged_storage: set[str] = set()
        self.last_tick = 0.0  # wall time of the last completed tick (for /metrics)
        self.last_tick_mono = time.monotonic()
        self.held_records_dropped = 0
        self._persisted_boundary = -(2**62)  # the close boundary the outbox last committed
        self._tick_clocks: tuple[float, float] | None = None  # (wall, monotonic) at the last tick
        self._next_keyframe = 0.0  # monotonic time of the next keyframe: the first tick sends one
        self.health: Any = None
        self.status_board: Any = None
        self.loop_errors: loop_errors.LoopErrorHandler | None = None

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
        rt = self.config.runtime
        for settings in self.config.drivers:
            ctx = DriverContext(
                settings.name,
                gateway_id=self.config.gateway.id,
                state_dir=self.state_dir / "drivers" / settings.name,
                submit=self.aggregator.add,
                submit_event=self.submit_event,
                clock=self.clock,
            )
            driver_class = driver_module(settings.type).load_driver()
            driver = driver_class(settings, ctx)
            self.supervisors.append(
                DriverSupervisor(driver, ctx, Backoff(rt.restart_backoff_initial, rt.restart_backoff_max))
            )

    def _build_uplinks(self) -> None:
        rt = self.config.runtime
        for settings in self.config.uplinks:
            ctx = UplinkContext(settings.name, gateway_id=self.config.gateway.id, state_dir=str(self.state_dir))
            uplink = uplink_module(settings.type).load_uplink()(settings, ctx)
            self.runners.append(
                UplinkRunner(uplink, ctx, self.outbox_call, backoff=Backoff(rt.restart_backoff_initial, rt.restart_backoff_max))
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
                log.warning("wall clock stepped (NTP sync?)", step_seconds=round(step, 3))
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
                log.info("outbox commits succeed again")
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
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            due = time.monotonic() >= next_checkpoint
            if due:
                next_checkpoint = time.monotonic() + checkpoint_every
            await self._tick(checkpoint=due)

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

    async def start(self) -> None:
        restored = await self.outbox_call(Outbox.open)
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

        self.status_board = StatusBoard(self)
        if self.config.health.listen:
            self.health = HealthServer(self.status_board, self.config.health.listen)
            self.health.start()
        log.info(
            "gateway started",
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
        # before start-up: a SIGTERM while the outbox opens must still end in a clean stop
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        tasks = [asyncio.create_task(s.run(), name=f"driver:{s.ctx.name}") for s in self.supervisors]
        runner_tasks = [asyncio.create_task(r.run(), name=f"uplink:{r.name}") for r in self.runners]
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
        log.info("gateway stopped")

    async def _drain(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            backlog = await self.outbox_call(lambda ob: sum(ob.backlog(r.name) for r in self.runners))
            if not backlog and all(r.idle for r in self.runners):
                return
            for runner in self.runners:
                runner.wake.set()
            await asyncio.sleep(0.05)
            await self._tick(checkpoint=False, acks=True)

    def summary(self) -> Summary:
        outputs = []
        for r in self.runners:
            current = getattr(r.uplink, "current", None)
            if current is not None:
                outputs.append(f"{r.name}: {current}")
        return Summary(
            readings=sum(s.ctx.readings for s in self.supervisors),
            windows_closed=self.aggregator.stats.closed,
            revisions=self.outbox.stats.revisions,
            late_dropped=self.aggregator.stats.late_dropped,
            future_dropped=self.aggregator.stats.future_dropped,
            decode_errors=sum(sum(s.ctx.decode_errors.values()) for s in self.supervisors),
            batches_written=self.outbox.stats.batches_written,
            batches_forwarded={r.name: r.forwarded_batches for r in self.runners},
            records_forwarded={r.name: r.forwarded_records for r in self.runners},
            evicted_batches=self.outbox.stats.evicted_batches,
            outbox_batches=self.outbox.stats.batches,
            outbox_path=str(self.outbox.path),
            outputs=outputs,
        )
