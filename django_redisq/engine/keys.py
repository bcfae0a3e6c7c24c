"""Every Redis key and channel name the engine uses, in one place.

All keys of one queue share the hash tag ``{<queue>}`` so that every script and transaction
touches a single Redis Cluster slot. Job hashes live under the same tag as their queue.
"""

from __future__ import annotations

from functools import cached_property

#: The states a job can be in; each is one sorted set per queue.
STATES = ("scheduled", "queued", "started", "deferred", "finished", "failed", "canceled")
#: States a job can still leave on its own.
ACTIVE_STATES = ("scheduled", "queued", "started", "deferred")
#: States a job ends in; their sorted sets are scored by expiry time.
TERMINAL_STATES = ("finished", "failed", "canceled")


class QueueKeys:
    """Key names for one queue under one prefix."""

    __slots__ = ("__dict__", "base", "prefix", "queue")

    def __init__(self, prefix: str, queue: str) -> None:
        if "{" in queue or "}" in queue:
            raise ValueError(f"queue name {queue!r} must not contain braces")
        self.prefix = prefix
        self.queue = queue
        self.base = f"{prefix}:{{{queue}}}"

    @cached_property
    def job_prefix(self) -> str:
        return f"{self.base}:job:"

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    @cached_property
    def done_prefix(self) -> str:
        return f"{self.base}:done:"

    def done(self, job_id: str) -> str:
        """A list that receives a token when a waited-for job ends (see ``Job.get``)."""
        return self.done_prefix + job_id

    def state(self, state: str) -> str:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}; expected one of {', '.join(STATES)}")
        return f"{self.base}:{state}"

    @cached_property
    def deps_prefix(self) -> str:
        """Sets of the jobs deferred on a job: ``deps_prefix + id``."""
        return f"{self.base}:dependents:"

    @cached_property
    def seq(self) -> str:
        """A counter that keeps FIFO order among jobs of equal priority."""
        return f"{self.base}:seq"

    @cached_property
    def channel(self) -> str:
        """Pub/Sub channel that wakes idle workers (channels are cluster-wide)."""
        return f"{self.base}:wake"

    @cached_property
    def idle(self) -> str:
        """Sorted set of the workers offering to take this queue's next job directly."""
        return f"{self.base}:idle"

    def handoff(self, worker: str) -> str:
        """Pub/Sub channel on which ``worker`` gets the jobs handed to it directly (packed by
        cmsgpack; see the ENQUEUE script)."""
        return f"{self.base}:to2:{worker}"

    def handoff_netstrings(self, worker: str) -> str:
        """The hand-off channel of enqueuers of earlier versions, whose messages are
        netstrings; the current ones publish there for workers of earlier versions."""
        return f"{self.base}:to:{worker}"

    @cached_property
    def stats(self) -> str:
        """Hash of cumulative job counters and time histograms per function (metrics)."""
        return f"{self.base}:stats"

    @cached_property
    def paused(self) -> str:
        return f"{self.base}:paused"

    def outbox_pushed(self, token: str) -> str:
        """Set when a transactional-outbox entry was pushed: a repeated push (relay after a
        crash) of the same entry enqueues nothing."""
        return f"{self.base}:outbox:{token}"

    @cached_property
    def limit_prefix(self) -> str:
        """Keys of one limit key (see ``limits.py``): ``limit_prefix + key + ":run"`` (sorted
        set of the jobs holding a concurrency slot, scored by lease deadline), ``":wait"``
        (sorted set of the jobs waiting for a slot, scored by their place in the queue) and
        ``":bucket"`` (hash: a rate limit's token bucket). Scripts derive these names, and the
        state keys, from ``job_prefix`` (``qkey`` in the script prelude); keep them in step."""
        return f"{self.base}:limit:"

    def limit(self, key: str, part: str) -> str:
        return f"{self.limit_prefix}{key}:{part}"

    def cron_last(self, schedule: str) -> str:
        """The last tick (ms) enqueued for a periodic schedule: makes each tick run once."""
        return f"{self.base}:cron:{schedule}"


def workers_key(prefix: str) -> str:
    """Sorted set of worker names scored by their last heartbeat (ms).

    Worker keys share the hash tag ``{workers}`` so one script can update both on a Cluster.
    """
    return f"{prefix}:{{workers}}"


def worker_key(prefix: str, name: str) -> str:
    """Hash describing one worker; expires when the worker stops beating."""
    return f"{prefix}:{{workers}}:{name}"


def cron_leader_key(prefix: str) -> str:
    """Which scheduler enqueues periodic jobs (a lease, taken over when its holder dies)."""
    return f"{prefix}:{{cron}}:leader"


def suspended_key(prefix: str) -> str:
    """Set while workers are suspended (``rqsuspend``)."""
    return f"{prefix}:suspended"
