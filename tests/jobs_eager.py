"""Jobs for the eager-mode and run_jobs tests: none of them touches Redis itself."""

from __future__ import annotations

import asyncio

from django_redisq import Retry, current_job, job

CALLS: list[object] = []


@job
def double(x: int) -> int:
    return 2 * x


@job("high")
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@job
def show_args(*args: object, **kwargs: object) -> list[object]:
    """Returns what it received, with type names: a worker sees decoded JSON."""
    return [[type(a).__name__ for a in args], sorted(kwargs)]


@job
def explode(message: str) -> None:
    raise ValueError(message)


@job(retry=Retry(max=3, delay=60, backoff=1.0, jitter=0, on=(ConnectionError,)))
def flaky_twice() -> int:
    """Fails on attempts 1 and 2 with a retryable error, then returns its attempt number."""
    ctx = current_job()
    assert ctx is not None
    if ctx.attempt < 3:
        raise ConnectionError(f"attempt {ctx.attempt}")
    return ctx.attempt


@job(retry=Retry(max=3, delay=0, on=(ConnectionError,)))
def not_retried() -> None:
    raise KeyError("not a ConnectionError: no retry")


@job
def bad_result() -> object:
    return object()


@job
def whoami() -> dict[str, object]:
    ctx = current_job()
    assert ctx is not None
    return {"id": ctx.id, "attempt": ctx.attempt, "meta": ctx.meta}


@job
def write_note(text: str) -> int:
    from tests.testapp.models import Note

    return Note.objects.create(text=text).pk


@job
def count_notes() -> int:
    from tests.testapp.models import Note

    return Note.objects.count()


@job
def spawn(x: int) -> str:
    """Enqueues another job: run_jobs(until_empty=True) runs that one too."""
    return double.delay(x).id


@job
def exits() -> None:
    raise SystemExit(3)
