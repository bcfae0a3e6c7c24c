"""Django side of the worker: database hygiene, signals, and building workers from settings."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections

from . import signals
from .conf import get_queue, redisq_settings
from .engine import eventloop
from .engine.executors import Executor
from .engine.job import JobRecord
from .engine.worker import Worker, WorkerHooks, WorkerOptions
from .outbox import OutboxRelay

_SIGNALS = {"job_started": signals.job_started, "job_finished": signals.job_finished,
            "job_failed": signals.job_failed}


class DjangoHooks(WorkerHooks):
    """Close stale database connections around each job, as Django's request cycle does, and
    send ``job_started`` / ``job_finished`` / ``job_failed``."""

    has_events = True

    def run_sync(self, record: JobRecord, fn: Callable[[], Any]) -> Any:
        close_old_connections()
        try:
            return fn()
        finally:
            close_old_connections()

    async def run_async(self, record: JobRecord, fn: Callable[[], Awaitable[Any]]) -> Any:
        # The async ORM runs queries in asgiref's shared sync thread: tidy that thread's
        # connections, which is where an async job's queries went.
        await sync_to_async(close_old_connections)()
        try:
            return await fn()
        finally:
            await sync_to_async(close_old_connections)()

    async def event(self, name: str, record: JobRecord, **info: Any) -> None:
        signal = _SIGNALS[name]
        if signal.has_listeners(sender=record.func):
            await signal.asend(sender=record.func, job=record, **info)


class InProcessHooks(DjangoHooks):
    """Hooks of ``testing.run_jobs``: jobs share the caller's database connection (a test's
    transaction), so connections are left alone; outcomes are counted into ``result``."""

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
