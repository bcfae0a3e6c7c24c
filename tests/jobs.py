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


flaky_with_retry = job(retry=Retry(max=3, delay=0.05, backoff=1.0, jitter=0))(flaky.func)


@job
def attempt_number() -> int:
    ctx = current_job()
    assert ctx is not None
    return ctx.attempt
