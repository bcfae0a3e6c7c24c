"""Type-checking tests: mypy runs on this module in CI (tox -e lint); it is never executed.

``assert_type`` fails the mypy run when an inferred type differs; lines marked
``type: ignore[...]`` must stay errors (``warn_unused_ignores`` reports them if they pass).
"""

from __future__ import annotations

from typing import assert_type

from django_redisq import Job, Retry, job


@job
def send_email(user_id: int, subject: str = "hi") -> str:
    return f"{user_id}:{subject}"


@job("high", timeout=30, retry=Retry(max=3))
async def fetch(url: str) -> int:
    return len(url)


@job(limit_key=lambda user_id: f"user:{user_id}", max_concurrency=2, rate_limit="10/s",
     rate_burst=20)
def limited(user_id: int) -> bool:
    return True


async def check_async() -> None:
    j = await fetch.adelay("https://example.com")
    assert_type(j, Job[int])
    assert_type(await j.aget(timeout=5), int)
    assert_type(await fetch("x"), int)


def check_sync() -> None:
    assert_type(send_email(1), str)
    j = send_email.delay(1, subject="x")
    assert_type(j, Job[str])
    assert_type(j.get(timeout=5), str)
    assert_type(j.result, str | None)
    assert_type(send_email.using(priority=5).delay(2), Job[str])
    assert_type(fetch.delay("u"), Job[int])
    assert_type(limited.delay(1), Job[bool])


def check_errors() -> None:
    send_email.delay("not an int")  # type: ignore[arg-type]
    send_email.delay(1, nope=True)  # type: ignore[call-arg]
    fetch.delay()  # type: ignore[call-arg]
    job(max_concurrency="2")  # type: ignore[call-overload]
