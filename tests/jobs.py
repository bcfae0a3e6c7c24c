"""Job functions the tests enqueue; workers import this module through REDISQ["IMPORTS"]."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
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


class Abort(BaseException):
    """Not an Exception: job code may still raise it (or SystemExit)."""


@job
def raise_base(kind: str) -> None:
    if kind == "exit":
        raise SystemExit(4)
    raise Abort("stop here")


@job
async def araise_base(kind: str) -> None:
    if kind == "exit":
        raise SystemExit(4)
    raise Abort("stop here")


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
    """Record which job ran and its attempt (cron tests count each tick's job id: a second
    enqueue of a tick would run attempt 1 twice; a re-run after a worker died is attempt 2)."""
    ctx = current_job()
    assert ctx is not None
    _redis().rpush("test:ticks", ctx.id)
    _redis().rpush("test:tick-attempts", f"{ctx.id}#{ctx.record.attempts}")
    return ctx.id


@job("outbox")
def outbox_count(key: str) -> int:
    """Counts its runs in a Redis key (the outbox tests: exactly once)."""
    return int(_redis().incr(key))


# -- observability (tests/test_observability.py runs these in an in-process worker) ----------
#: Set by the progress jobs once they reported progress; they then wait for PROGRESS_GO.
PROGRESS_REPORTED = threading.Event()
PROGRESS_GO = threading.Event()


@job
def half_done(message: str) -> str:
    ctx = current_job()
    assert ctx is not None
    ctx.set_progress(0.5, message)
    ctx.update_meta(step="middle")
    PROGRESS_REPORTED.set()
    PROGRESS_GO.wait(20)
    return "done"


@job
async def async_half_done(message: str) -> str:
    ctx = current_job()
    assert ctx is not None
    ctx.set_progress(0.5, message)
    PROGRESS_REPORTED.set()
    await asyncio.to_thread(PROGRESS_GO.wait, 20)
    return "done"


@job
def busy_progress(steps: int) -> int:
    """Reports progress in a tight loop: the worker must throttle the writes."""
    ctx = current_job()
    assert ctx is not None
    for i in range(1, steps + 1):
        ctx.set_progress(i / steps, f"step {i}")
    return steps


@job
def log_inside(text: str) -> str:
    logging.getLogger("tests.jobs").warning("inside the job: %s", text)
    return text


#: Set by the test between stepped_progress's two steps.
PROGRESS_STEP = threading.Event()


@job
def stepped_progress() -> str:
    """0.5, then (after PROGRESS_STEP) 0.75, then (after PROGRESS_GO) done."""
    ctx = current_job()
    assert ctx is not None
    ctx.set_progress(0.5, "half")
    PROGRESS_REPORTED.set()
    PROGRESS_STEP.wait(30)
    ctx.set_progress(0.75, "three quarters")
    PROGRESS_GO.wait(30)
    return "done"


@job
def traced_inner() -> str:
    """Starts a span of its own: it must be a child of the worker's job span."""
    from opentelemetry import trace

    with trace.get_tracer("tests").start_as_current_span("inner work"):
        return "ok"


# -- limits (tests/test_limits.py) ---------------------------------------------------------------
@job(limit_key=lambda user_id: f"user:{user_id}", max_concurrency=2)
async def per_user(user_id: int, counter: str, seconds: float = 0.05) -> int:
    """Count itself in (with the highest count kept), run a little, count itself out."""
    _enter(counter)
    try:
        await asyncio.sleep(seconds)
    finally:
        _redis().decr(counter)
    return user_id


@job(limit_key="one-at-a-time", max_concurrency=1)
def exclusive(name: str) -> str:
    """Holds its key's only slot until the test pushes to ``name:go``."""
    r = _redis()
    r.rpush("test:exclusive", name)
    r.blmove(f"{name}:go", f"{name}:go", 60, "RIGHT", "LEFT")
    return name


@job(rate_limit="10/s")
async def rated(tag: str) -> str:
    """Record its start time, Redis TIME in ms, to ``test:starts``."""
    r = _redis()
    sec, usec = r.time()
    r.rpush("test:starts", sec * 1000 + usec // 1000)
    return tag


# -- retries of timed-out jobs (tests/test_scheduling.py) --------------------------------------
@job(timeout=0.2, retry=Retry(max=1, delay=0, jitter=0, on=(ConnectionError, TimeoutError)))
async def outlives_its_timeout() -> None:
    """Runs past its timeout, under README's retry policy for network trouble."""
    await asyncio.sleep(30)
