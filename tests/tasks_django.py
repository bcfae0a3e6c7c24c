"""``django.tasks`` tasks the tests enqueue (Django 6.0+ only).

Workers import this module through ``REDISQ["IMPORTS"]`` (tests/settings.py adds it on Django 6
only); declaring each ``@task`` registers its runner with the worker.
"""

from __future__ import annotations

import django

if django.VERSION < (6, 0):
    raise ImportError("tests.tasks_django needs Django 6.0+ (django.tasks)")

import asyncio
import math
import os
from typing import Any

import redis
from django.tasks import TaskContext, TaskResult, task
from django.tasks.signals import task_finished, task_started


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDISQ_TEST_REDIS_URL"])


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="high")
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@task
async def async_fail(message: str = "async boom") -> None:
    await asyncio.sleep(0)
    raise KeyError(message)


@task
def record(tag: str) -> str:
    """Append the tag to a Redis list: shows which tasks ran, in which order."""
    _redis().rpush("test:task-record", tag)
    return tag


@task
def pair(values: tuple[int, int]) -> tuple[int, int]:
    """Returns a tuple: Django normalises it to a JSON list."""
    return values


@task(takes_context=True)
def with_context(context: TaskContext[Any, Any], tag: str) -> dict[str, Any]:
    return {"attempt": context.attempt, "id": context.task_result.id, "tag": tag,
            "status": str(context.task_result.status),
            "worker_ids": context.task_result.worker_ids}


@task(takes_context=True)
async def async_with_context(context: TaskContext[Any, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"attempt": context.attempt, "id": context.task_result.id}


@task
async def sleepy() -> None:
    """Runs until a timeout or a cancel stops it."""
    await asyncio.sleep(30)


@task
def wait_release(key: str) -> str:
    """A sync task blocked until the test pushes to ``key`` (a thread no timeout can stop)."""
    _redis().blpop([key], timeout=30)
    return "released"


@task
def returns_nan() -> float:
    """A float, yet not JSON: the worker cannot store it."""
    return math.nan


@task
def exit_worker() -> None:
    """Kills the worker process running it."""
    os._exit(1)


@task(takes_context=True)
def task_options(context: TaskContext[Any, Any]) -> dict[str, Any]:
    """The options of the task as the running job sees them."""
    declared = context.task_result.task
    run_after = declared.run_after
    return {"queue": declared.queue_name, "priority": declared.priority,
            "run_after": run_after.isoformat() if run_after else None}


def signal_line(kind: str, result: TaskResult[Any, Any]) -> str:
    """How the tests write down a task signal (their own, or a worker subprocess's)."""
    errors = ",".join(e.exception_class_path for e in result.errors)
    return (f"{kind} {result.task.name} {result.status} [{errors}] "
            f"q={result.task.queue_name} p={result.task.priority}")


# Worker subprocesses started with REDISQ_TEST_TASK_SIGNALS write the task signals they send to
# a Redis list, for the test to read.
if os.environ.get("REDISQ_TEST_TASK_SIGNALS"):
    def _record_signal(kind: str) -> Any:
        def receiver(sender: Any, task_result: TaskResult[Any, Any], **kwargs: Any) -> None:
            _redis().rpush("test:task-signals", signal_line(kind, task_result))
        return receiver

    task_started.connect(_record_signal("started"), weak=False)
    task_finished.connect(_record_signal("finished"), weak=False)


# Django 6.1+ passes @task(**kwargs) to the backend's task_class (RedisQTask): the engine's
# retry, timeout and job_id options. Django 6.0 rejects them at the decorator.
if django.VERSION >= (6, 1):
    from django_redisq import Retry

    @task(retry=Retry(max=2, delay=0, jitter=0))
    def flaky(key: str) -> int:
        """Fails on its first two attempts, then returns the attempt number."""
        n = int(_redis().incr(key))
        if n < 3:
            raise RuntimeError(f"attempt {n} fails")
        return n

    @task(timeout=0.3)
    async def too_slow() -> None:
        await asyncio.sleep(30)

    @task(job_id=lambda account: f"sync-account:{account}")
    def sync_account(account: int) -> int:
        _redis().rpush("test:task-record", f"sync {account}")
        return account

    @task(job_id="nightly-report")
    def nightly_report() -> str:
        return "done"
