"""Django side of the worker: database hygiene, signals, and building workers from settings."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections
from django.db.backends.signals import connection_created

from . import signals
from .conf import get_queue, redisq_settings
from .engine import eventloop
from .engine.executors import Executor
from .engine.job import JobRecord
from .engine.worker import Worker, WorkerHooks, WorkerOptions
from .outbox import OutboxRelay

_SIGNALS = {"job_started": signals.job_started, "job_finished": signals.job_finished,
            "job_failed": signals.job_failed}


class SharedPasses:
    """Runs ``fn`` (the database hygiene) in asgiref's sync thread for async jobs, one pass
    for every job that asks while no pass has started.

    The async ORM runs its queries in that one thread, so that is where an async job's
    connections are; a job asks before and after it runs, as Django's request cycle does. One
    thread hop per ask made those hops queue on the thread and cost a worker of 100 async no-op
    jobs more than half its throughput. A job that asks joins the pass waiting to start, if
    any, so the pass that answers it still starts after it asked."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        #: The pass waiting to start: its loop and the futures of the jobs waiting for it.
        self._waiting: tuple[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Passes started so far.
        self.passes = 0

    async def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            waiting = self._waiting
            # (A pass of another loop, in another thread, is not joined: its futures are
            # settled on its own loop.)
            start = waiting is None or waiting[0] is not loop
            if start:
                waiting = self._waiting = (loop, [])
            assert waiting is not None
            waiting[1].append(fut)
        if start:
            task = loop.create_task(self._pass(waiting))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await fut

    def _close(self, waiting: tuple[Any, list[asyncio.Future[None]]]) -> None:
        """From now on, an ask waits for the next pass, not for ``waiting``'s."""
        with self._lock:
            if self._waiting is waiting:
                self._waiting = None

    async def _pass(self, waiting: tuple[Any, list[asyncio.Future[None]]]) -> None:
        def run() -> None:
            self._close(waiting)
            self.passes += 1
            self._fn()

        error: BaseException | None = None
        try:
            await sync_to_async(run)()
        except BaseException as exc:  # an Exception fails the asks; a cancel cancels them
            error = exc
        self._close(waiting)  # had it failed before it started, no ask may join it now
        for fut in waiting[1]:
            if fut.done():  # the asking job was cancelled meanwhile
                continue
            if error is None:
                fut.set_result(None)
            elif isinstance(error, Exception):
                fut.set_exception(error)
            else:
                fut.cancel()
        if error is not None and not isinstance(error, Exception):
            raise error


class SyncThreadTidy(SharedPasses):
    """``close_old_connections`` in asgiref's sync thread, before and after each async job,
    and whether it is needed there: ``maybe_open`` (callers skip the pass while it is clear).

    A pass that finds no connection left open in that thread clears ``maybe_open``; any
    thread opening a connection (``connection_created``) sets it again. While it is clear, a
    pass would find nothing to close, so jobs that leave the database alone (most async jobs)
    hop to that thread for nothing: before this check the hops cost a worker of no-op async
    jobs half its throughput. Jobs that use the database get a pass after they run, as before;
    the pass before the next job is skipped when that one closed their connection."""

    def __init__(self) -> None:
        super().__init__(self._tidy)
        #: Whether a connection may be open in the sync thread (unknown at first).
        self.maybe_open = True
        connection_created.connect(self._opened)  # weakly: goes with this object

    def _opened(self, sender: Any, **kwargs: Any) -> None:
        self.maybe_open = True

    def _tidy(self) -> None:  # in the sync thread, where the async ORM's connections are
        close_old_connections()
        # Only this thread opens the connections that matter here, and not while this runs.
        self.maybe_open = any(conn.connection is not None
                              for conn in connections.all(initialized_only=True))


class DjangoHooks(WorkerHooks):
    """Close stale database connections around each job, as Django's request cycle does, and
    send ``job_started`` / ``job_finished`` / ``job_failed``."""

    _tidy_async: SyncThreadTidy | None = None

    @property  # read-only here: it follows the signals' receivers
    def has_events(self) -> bool:  # type: ignore[override]
        """Whether a signal has a receiver: without one, the worker skips ``event`` (a call and
        ``Signal.has_listeners``, about 1 µs per job and signal)."""
        return bool(signals.job_started.receivers or signals.job_finished.receivers
                    or signals.job_failed.receivers)

    def run_sync(self, record: JobRecord, fn: Callable[[], Any]) -> Any:
        close_old_connections()
        try:
            return fn()
        finally:
            close_old_connections()

    async def run_async(self, record: JobRecord, fn: Callable[[], Awaitable[Any]]) -> Any:
        # The async ORM runs queries in asgiref's shared sync thread: tidy that thread's
        # connections, which is where an async job's queries went.
        tidy = self._tidy_async
        if tidy is None:
            tidy = self._tidy_async = SyncThreadTidy()
        if tidy.maybe_open:
            await tidy()
        try:
            return await fn()
        finally:
            if tidy.maybe_open:
                await tidy()

    async def event(self, name: str, record: JobRecord, **info: Any) -> None:
        signal = _SIGNALS[name]
        if signal.has_listeners(sender=record.func):
            await signal.asend(sender=record.func, job=record, **info)


class InProcessHooks(DjangoHooks):
    """Hooks of ``testing.run_jobs``: jobs share the caller's database connection (a test's
    transaction), so connections are left alone; outcomes are counted into ``result``."""

    has_events = True  # type: ignore[assignment]  # counts outcomes with or without receivers

    def __init__(self, result: Any) -> None:
        self.result = result

    def run_sync(self, record: JobRecord, fn: Callable[[], Any]) -> Any:
        return fn()

    async def run_async(self, record: JobRecord, fn: Callable[[], Awaitable[Any]]) -> Any:
        return await fn()

    async def event(self, name: str, record: JobRecord, **info: Any) -> None:
        if name == "job_started":
            self.result.job_ids.append(record.id)
        elif name == "job_finished":
            self.result.finished += 1
        elif name == "job_failed":
            self.result.failed_attempts += 1
        await super().event(name, record, **info)


class CallerThreadExecutor(Executor):
    """Runs sync job bodies in the thread that called ``async_to_sync`` (one at a time), so
    they use that thread's database connection. Timeouts are reported but, as with threads,
    cannot stop the function."""

    def __init__(self, threads: int) -> None:
        pass

    async def run_sync(self, fn: Callable[[], Any], timeout: float | None,
                       on_thread_done: Callable[[], None]) -> Any:
        try:
            return await sync_to_async(fn, thread_sensitive=True)()
        finally:
            on_thread_done()

    def shutdown(self, wait: bool) -> None:
        pass


def caller_thread_executor(threads: int) -> Executor:
    return CallerThreadExecutor(threads)


def worker_options(**overrides: Any) -> WorkerOptions:
    """Worker options from ``REDISQ`` settings, with command-line overrides."""
    s = redisq_settings()
    opts = WorkerOptions(concurrency=s.concurrency, lease=s.lease, heartbeat=s.heartbeat,
                         max_deaths=s.max_deaths, grace=s.shutdown_grace)
    for key, value in overrides.items():
        if value is not None:
            setattr(opts, key, value)
    return opts


def build_worker(queue_names: Sequence[str], *, hooks: WorkerHooks | None = None,
                 executor: Callable[[int], Executor] | None = None,
                 **overrides: Any) -> Worker:
    """A worker for ``queue_names`` configured from settings; ``overrides`` are
    ``WorkerOptions`` fields (``burst``, ``concurrency``, ...)."""
    from .conf import all_queues
    from .schedules import load_schedules

    queues = [get_queue(name) for name in queue_names]
    options = worker_options(**overrides)
    options.schedules = load_schedules()
    return Worker(queues, options=options, hooks=hooks or DjangoHooks(),
                  schedule_queues={q.name: q for q in all_queues()}, executor=executor)


def start_outbox_relay(queue_names: Sequence[str]) -> OutboxRelay | None:
    """Start the outbox relay thread for those of ``queue_names`` with ``"OUTBOX": True``."""
    from .conf import outbox_queues

    names = [n for n in queue_names if n in outbox_queues()]
    if not names:
        return None
    s = redisq_settings()
    relay = OutboxRelay(names, s.outbox_poll_interval, s.outbox_relay_after)
    relay.start()
    return relay


def run_worker(queue_names: Sequence[str], install_signals: bool = True,
               on_worker: Callable[[Worker], None] | None = None, **overrides: Any) -> int:
    """Run one worker in this process until it stops; returns its exit code. A worker serving
    an outbox queue also runs that queue's relay (a thread) while it runs. ``on_worker`` is
    called with the worker before it starts (``--reload`` uses it to stop the worker)."""
    worker = build_worker(queue_names, **overrides)
    if on_worker is not None:
        on_worker(worker)

    async def main() -> int:
        return await worker.run(install_signals=install_signals)

    relay = start_outbox_relay(queue_names)
    try:
        return eventloop.run(main())
    finally:
        if relay is not None:
            relay.stop()
            relay.join(10)
        connections.close_all()


def reset_after_fork() -> None:
    """Drop connections inherited from the parent so the child opens its own."""
    from .conf import all_queues

    for queue in all_queues():
        queue.connection.fork_reset()
    os.environ["REDISQ_WORKER_CHILD"] = "1"
