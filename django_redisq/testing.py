"""Helpers for testing code that enqueues jobs.

With ``REDISQ["MODE"] = "eager"``, ``.delay()`` runs the job at once in the calling process,
through the same serializer as the real queue (so arguments the queue would reject still raise
``TypeError``), and returns a handle that needs no Redis.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from typing import Any

from .engine.job import SCHEMA_VERSION, Job, JobRecord
from .engine.queue import Prepared
from .engine.registry import registry
from .engine.worker import describe_exception


class EagerJob(Job[Any]):
    """A job that already ran in-process; its state lives in memory, not in Redis."""

    @property
    def status(self) -> str | None:
        return self.record.status

    async def astatus(self) -> str | None:
        return self.record.status

    def refresh(self) -> EagerJob:
        return self

    async def arefresh(self) -> EagerJob:
        return self

    @property
    def record(self) -> JobRecord:
        assert self._record is not None
        return self._record

    def cancel(self) -> str | None:
        return self.record.status

    async def acancel(self) -> str | None:
        return self.record.status

    def get(self, timeout: float | None = None) -> Any:
        return self._outcome(self.record)

    async def aget(self, timeout: float | None = None) -> Any:
        return self._outcome(self.record)


def run_eager(prepared: Prepared) -> EagerJob:
    """Run a prepared job here and now, as a worker would, and return its finished handle."""
    fields = dict(zip(prepared.call.args[5::2], prepared.call.args[6::2]))
    now = int(time.time() * 1000)
    rec = JobRecord.from_hash({
        k.encode(): (v if isinstance(v, bytes) else str(v).encode())
        for k, v in {**fields, "status": "started", "attempts": 1, "enqueued_at": now,
                     "started_at": now, "v": SCHEMA_VERSION}.items()
    })
    serializer = prepared.queue.serializer
    try:
        func = registry.get(rec.func).func
        args, kwargs = rec.call()
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            result = _run_coroutine(result)
        rec.result = serializer.dumps(result)
        rec.status = "finished"
    except Exception as exc:
        err = describe_exception(exc)
        rec.error, rec.errors, rec.status = err, [err], "failed"
        json.dumps(err)
    rec.ended_at = int(time.time() * 1000)
    return EagerJob(prepared.queue, rec.id, rec)


def _run_coroutine(awaitable: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(awaitable))
    # Called from async code (adelay runs eager jobs in a thread): give it its own loop.
    return asyncio.new_event_loop().run_until_complete(_await(awaitable))


async def _await(awaitable: Any) -> Any:
    return await awaitable
