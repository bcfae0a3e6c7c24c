"""Exceptions raised by the engine."""

from __future__ import annotations

import redis


class RedisQError(Exception):
    """Base class of django-redisq's own errors."""


class QueueNotFound(RedisQError, KeyError):
    """A queue name that is not configured."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else ""


class JobNotFound(RedisQError, LookupError):
    """The job does not exist (never enqueued, deleted, or expired after its TTL)."""


class JobTimeout(RedisQError, TimeoutError):
    """The job ran longer than its timeout.

    A ``TimeoutError`` (as ``asyncio.TimeoutError`` is since Python 3.11), so that a policy
    such as ``Retry(on=(ConnectionError, TimeoutError))`` retries jobs that timed out. Raised
    with one message argument: ``OSError`` reads two as ``(errno, strerror)``."""


class JobFailed(RedisQError):
    """Raised by ``Job.get()`` when the job ended failed; carries the remote error."""

    def __init__(self, job_id: str, exc_type: str, message: str, traceback: str) -> None:
        super().__init__(f"job {job_id} failed: {exc_type}: {message}")
        self.job_id = job_id
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback


class JobCanceled(RedisQError):
    """Raised by ``Job.get()`` when the job was canceled."""


# The two errors that Redis scripts record themselves, by these bare names (a job record's
# ``error["type"]``); the classes give those names an importable home (``django.tasks``'
# ``TaskError.exception_class`` imports what it reads).
class WorkerDied(RedisQError):
    """The job's worker died while running it ``MAX_DEATHS`` times: failed as a poison job."""


class DependencyFailed(RedisQError):
    """A job this one depended on failed or was canceled, so this one was canceled."""


class UnknownFunction(RedisQError):
    """The job names a function the worker has not registered."""


class PayloadError(RedisQError):
    """The stored payload cannot be decoded (bad serializer, truncated data, bad schema)."""


class RedisUnavailable(RedisQError, redis.ConnectionError):
    """Redis cannot be reached; names the queue and the masked URL."""


class NotReplicated(RedisQError):
    """An enqueue reached the master, but fewer replicas than ``WAIT_REPLICAS`` confirmed it
    within ``WAIT_TIMEOUT_MS``: the job is queued, but a failover now could lose it."""
