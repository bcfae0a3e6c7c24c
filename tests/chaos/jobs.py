"""Job functions of the reliability tests (chaos, rolling restart, memory soak).

Worker subprocesses import this module through ``REDISQ_TEST_EXTRA_IMPORTS``. Each run of a job is
recorded in an *audit* Redis (``REDISQ_AUDIT_URL``): a second private redis-server that the
test never restarts, so the record of what ran survives the restarts of the queue's Redis.
A run appends ``"<pid>:<attempt>"`` to ``runs:<job id>``; the test knows which pids it
SIGKILLed and so which extra runs are the at-least-once re-runs the design allows.
"""

from __future__ import annotations

import asyncio
import os
import time

import redis

from django_redisq import Retry, current_job, job

_audit: redis.Redis | None = None


def audit() -> redis.Redis:
    """One client per process (redis-py clients are thread-safe): jobs run in threads too."""
    global _audit
    if _audit is None:
        _audit = redis.Redis.from_url(os.environ["REDISQ_AUDIT_URL"])
    return _audit


def _record_run(prefix: str = "runs") -> int:
    """Record this run; returns how many runs the job has had, this one included."""
    ctx = current_job()
    assert ctx is not None
    return int(audit().rpush(f"{prefix}:{ctx.id}", f"{os.getpid()}:{ctx.attempt}"))


@job("default")
def chaos_sync(ms: int) -> int:
    _record_run()
    time.sleep(ms / 1000)
    return ms


@job("high")
async def chaos_async(ms: int) -> int:
    _record_run()
    await asyncio.sleep(ms / 1000)
    return ms


@job("low", retry=Retry(max=3, delay=0.2, backoff=1.0, jitter=0))
def chaos_retry(ms: int) -> int:
    """Fails its first run on purpose; the retry succeeds."""
    n = _record_run()
    time.sleep(ms / 1000)
    if n == 1:
        raise RuntimeError("the first run fails on purpose")
    return n


@job("high")
def chaos_tick() -> None:
    """The periodic job: its id is ``cron:<schedule>:<tick ms>``, one per tick."""
    _record_run("tick")


@job("default")
async def noop_async() -> None:
    """The memory soak's job: nothing but the queue's own bookkeeping."""
