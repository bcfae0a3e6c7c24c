"""Job functions the tests enqueue; workers import this module through REDISQ["IMPORTS"]."""

from __future__ import annotations

import asyncio
import os
import time

import redis

from django_redisq import Retry, current_job, job


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDISQ_TEST_REDIS_URL"])


@job
def add(a: int, b: int) -> int:
    return a + b


@job("high")
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@job
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@job
def echo(value: object) -> object:
    return value


@job
def record(tag: str) -> str:
    """Append the tag to a Redis list: shows which jobs ran, in which order."""
    _redis().rpush("test:record", tag)
    return tag


@job
def write_note(text: str) -> int:
    from tests.testapp.models import Note

    return Note.objects.create(text=text).pk


@job
async def async_write_note(text: str) -> int:
    from tests.testapp.models import Note

    note = await Note.objects.acreate(text=text)
    return note.pk


def _enter(counter: str) -> None:
    r = _redis()
    now = r.incr(counter)
    # Keep the highest value seen: how many ran at once.
    r.eval("if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[1]) then "
           "redis.call('SET', KEYS[2], ARGV[1]) end", 2, counter, counter + ":max", now)


@job
async def async_gate(counter: str, release_key: str) -> int:
    """Count itself in, then wait until the test releases the gate (a Redis key)."""
    _enter(counter)
    r = _redis()
    try:
        while not r.exists(release_key):
            await asyncio.sleep(0.005)
    finally:
        r.decr(counter)
    return 1


@job
def sync_gate(counter: str, release_key: str) -> int:
    _enter(counter)
    r = _redis()
    try:
        r.blmove(release_key, release_key, 30, "RIGHT", "LEFT")
    finally:
        r.decr(counter)
    return 1


@job
def sleep_sync(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@job
async def sleep_async(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@job
def flaky(key: str, failures: int) -> int:
    """Fail the first `failures` attempts, then succeed."""
    n = _redis().incr(key)
    if n <= failures:
        raise RuntimeError(f"attempt {n} fails")
    return n


flaky_with_retry = job(
    retry=Retry(max=3, delay=0.05, backoff=1.0, jitter=0), name="tests.jobs.flaky_retry"
)(flaky.func)


@job
def attempt_number() -> int:
    ctx = current_job()
    assert ctx is not None
    return ctx.attempt


@job
def block(name: str) -> str:
    """Mark itself started (a Redis key), then wait until the test pushes to ``name:go``."""
    r = _redis()
    r.incr(f"{name}:runs")
    r.set(f"{name}:started", "1")
    r.blmove(f"{name}:go", f"{name}:go", 60, "RIGHT", "LEFT")
    return name


@job
def block_first_run(name: str) -> int:
    """The first run blocks (its worker gets killed); later runs return their run number."""
    r = _redis()
    n = int(r.incr(f"{name}:runs"))
    if n == 1:
        r.set(f"{name}:started", "1")
        r.blmove(f"{name}:go", f"{name}:go", 60, "RIGHT", "LEFT")
    return n


@job
def exit_process(name: str) -> None:
    """Kill the process running it, every time (a poison job)."""
    _redis().incr(f"{name}:runs")
    os._exit(3)


@job
def unserializable_result() -> object:
    return object()


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken too")


@job
def raise_bad_str() -> None:
    raise BadStr()


@job(timeout=0.5)
def sleep_sync_short_timeout(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@job(timeout=0.3)
async def sleep_async_short_timeout(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


always_fails_with_retry = job(
    "default", retry=Retry(max=2, delay=0.05, backoff=1.0, jitter=0), name="tests.jobs.always"
)(fail.func)


@job
def cooperative(name: str) -> str:
    """A sync job that checks its cancel flag, as long-running thread-mode jobs should."""
    r = _redis()
    r.set(f"{name}:started", "1")
    ctx = current_job()
    assert ctx is not None
    deadline = time.monotonic() + 30
    while not ctx.cancel_requested and time.monotonic() < deadline:
        time.sleep(0.01)
    return "stopped" if ctx.cancel_requested else "timed out"


@job
async def async_block(name: str) -> str:
    r = _redis()
    r.set(f"{name}:started", "1")
    await asyncio.sleep(60)
    return name


@job
def record_tick() -> str:
    """Record which job ran (cron tests count each tick's job id)."""
    ctx = current_job()
    assert ctx is not None
    _redis().rpush("test:ticks", ctx.id)
    return ctx.id
