"""The django-redisq queue engine. It imports redis, never Django, so any Python process can
enqueue into (or work on) the same queues."""

from .connection import ClusterConfig, RedisConnection, SentinelConfig, mask_url
from .errors import (
    JobCanceled,
    JobFailed,
    JobNotFound,
    JobTimeout,
    NotReplicated,
    PayloadError,
    QueueNotFound,
    RedisQError,
    RedisUnavailable,
    UnknownFunction,
)
from .job import Job, JobRecord
from .keys import ACTIVE_STATES, STATES, TERMINAL_STATES
from .queue import PayloadTooLarge, Prepared, Queue
from .registry import Registry, registry
from .retry import Retry

__all__ = [
    "ACTIVE_STATES",
    "STATES",
    "TERMINAL_STATES",
    "ClusterConfig",
    "Job",
    "JobCanceled",
    "JobFailed",
    "JobNotFound",
    "JobRecord",
    "JobTimeout",
    "NotReplicated",
    "PayloadError",
    "PayloadTooLarge",
    "Prepared",
    "Queue",
    "QueueNotFound",
    "RedisConnection",
    "RedisQError",
    "RedisUnavailable",
    "Registry",
    "Retry",
    "SentinelConfig",
    "UnknownFunction",
    "mask_url",
    "registry",
]
