"""Django side of the worker: database hygiene, signals, and building workers from settings."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections

from . import signals
from .conf import get_queue, redisq_settings
from .engine.job import JobRecord
from .engine.worker import Worker, WorkerHooks, WorkerOptions

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


def worker_options(**overrides: Any) -> WorkerOptions:
    """Worker options from ``REDISQ`` settings, with command-line overrides."""
    s = redisq_settings()
    opts = WorkerOptions(concurrency=s.concurrency, lease=s.lease, heartbeat=s.heartbeat,
                         max_deaths=s.max_deaths, grace=s.shutdown_grace)
    for key, value in overrides.items():
        if value is not None:
            setattr(opts, key, value)
    return opts


def build_worker(queue_names: Sequence[str], **overrides: Any) -> Worker:
    from .conf import all_queues
    from .schedules import load_schedules

    queues = [get_queue(name) for name in queue_names]
    options = worker_options(**overrides)
    options.schedules = load_schedules()
    return Worker(queues, options=options, hooks=DjangoHooks(),
                  schedule_queues={q.name: q for q in all_queues()})


def run_worker(queue_names: Sequence[str], install_signals: bool = True, **overrides: Any) -> int:
    """Run one worker in this process until it stops; returns its exit code."""
    worker = build_worker(queue_names, **overrides)

    async def main() -> int:
        return await worker.run(install_signals=install_signals)

    try:
        return asyncio.run(main())
    finally:
        connections.close_all()


def reset_after_fork() -> None:
    """Drop connections inherited from the parent so the child opens its own."""
    from .conf import all_queues

    for queue in all_queues():
        queue.connection.fork_reset()
    os.environ["REDISQ_WORKER_CHILD"] = "1"
