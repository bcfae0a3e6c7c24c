"""django-redisq: a Django-native Redis job queue for sync and async jobs.

Public names are imported lazily, so ``import django_redisq.engine`` (used by non-Django
processes) does not import Django.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "job": "django_redisq.decorators",
    "JobFunction": "django_redisq.decorators",
    "get_queue": "django_redisq.conf",
    "Job": "django_redisq.engine.job",
    "JobRecord": "django_redisq.engine.job",
    "Queue": "django_redisq.engine.queue",
    "Retry": "django_redisq.engine.retry",
    "current_job": "django_redisq.engine.context",
    "JobTimeout": "django_redisq.engine.errors",
    "JobFailed": "django_redisq.engine.errors",
    "JobCanceled": "django_redisq.engine.errors",
    "JobNotFound": "django_redisq.engine.errors",
    "QueueNotFound": "django_redisq.engine.errors",
    "RedisUnavailable": "django_redisq.engine.errors",
    "NotReplicated": "django_redisq.engine.errors",
    "RedisQError": "django_redisq.engine.errors",
    "PayloadTooLarge": "django_redisq.engine.queue",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:  # explicit re-exports (``x as x``) for type checkers
    from .conf import get_queue as get_queue
    from .decorators import JobFunction as JobFunction
    from .decorators import job as job
    from .engine.context import current_job as current_job
    from .engine.errors import JobCanceled as JobCanceled
    from .engine.errors import JobFailed as JobFailed
    from .engine.errors import JobNotFound as JobNotFound
    from .engine.errors import JobTimeout as JobTimeout
    from .engine.errors import NotReplicated as NotReplicated
    from .engine.errors import QueueNotFound as QueueNotFound
    from .engine.errors import RedisQError as RedisQError
    from .engine.errors import RedisUnavailable as RedisUnavailable
    from .engine.job import Job as Job
    from .engine.job import JobRecord as JobRecord
    from .engine.queue import PayloadTooLarge as PayloadTooLarge
    from .engine.queue import Queue as Queue
    from .engine.retry import Retry as Retry

def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'django_redisq' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
