"""A queue: enqueue, inspect, cancel, requeue and wait, plus the operations workers use.

Each public method has a sync and an async form sharing one implementation (see ``ops``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import scripts
from .connection import RedisConnection
from .errors import JobNotFound, RedisQError
from .job import SCHEMA_VERSION, Job, JobRecord, encode_fields
from .keys import ACTIVE_STATES, STATES, TERMINAL_STATES, QueueKeys
from .ops import Batch, Call, Cmd, Driver, Steps
from .retry import Retry
from .serializers import Serializer, check_serializable, get_serializer

DEFAULT_RESULT_TTL = 24 * 3600.0
DEFAULT_FAILURE_TTL = 7 * 24 * 3600.0
DEFAULT_TIMEOUT = 180.0
DEFAULT_MAX_PAYLOAD = 512 * 1024
#: Longest single blocking wait of ``Job.get()``, in seconds (it loops until its timeout).
WAIT_SLICE = 2.0


class PayloadTooLarge(RedisQError, ValueError):
    """The encoded arguments exceed ``MAX_PAYLOAD_BYTES``."""


def _ms(seconds: float) -> int:
    """A TTL in ms; a negative TTL means "keep forever" and stays -1."""
    return -1 if seconds < 0 else int(seconds * 1000)


@dataclass
class Prepared:
    """A job checked and encoded, ready to be sent (now, or after a transaction commits)."""

    queue: Queue
    id: str
    call: Call

    def send(self) -> Job[Any]:
        return self.queue.send(self)

    async def asend(self) -> Job[Any]:
        return await self.queue.asend(self)


class Queue:
    """One named queue on one Redis deployment."""

    def __init__(
        self,
        name: str,
        connection: RedisConnection,
        *,
        prefix: str = "redisq",
        serializer: str = "json",
        default_timeout: float | None = DEFAULT_TIMEOUT,
        result_ttl: float = DEFAULT_RESULT_TTL,
        failure_ttl: float = DEFAULT_FAILURE_TTL,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.name = name
        self.connection = connection
        self.prefix = prefix
        self.keys = QueueKeys(prefix, name)
        self.serializer: Serializer = get_serializer(serializer)
        self.default_timeout = default_timeout
        self.result_ttl = result_ttl
        self.failure_ttl = failure_ttl
        self.max_payload_bytes = max_payload_bytes
        self._driver = Driver(lambda: f"queue {self.name!r} at {self.connection.masked_url}")

    def __repr__(self) -> str:
        return f"<Queue {self.name} {self.connection.masked_url}>"

    # -- running steps ------------------------------------------------------------------------
    def run(self, steps: Steps[Any]) -> Any:
        return self._driver.drive(self.connection.client(), steps)

    async def arun(self, steps: Steps[Any]) -> Any:
        return await self._driver.adrive(self.connection.aclient(), steps)

    # -- enqueue ------------------------------------------------------------------------------
    def prepare(
        self,
        func: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        job_id: str | None = None,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
        priority: int = 0,
        timeout: float | None = None,
        retry: Retry | None = None,
        result_ttl: float | None = None,
        failure_ttl: float | None = None,
        meta: dict[str, Any] | None = None,
        arg_names: list[str] | None = None,
        once: tuple[str, int] | None = None,
        depends_on: Sequence[Job[Any] | str] | None = None,
        run_anyway: bool = False,
    ) -> Prepared:
        """Check and encode a job without touching Redis.

        Raises ``TypeError`` for arguments the serializer cannot encode and ``ValueError`` for
        bad options, so mistakes surface in the caller, before anything is sent. ``once`` is
        ``(schedule name, tick ms)``: the job is sent only if no later tick was (cron).
        ``depends_on`` keeps the job ``deferred`` until those jobs (of this queue) finish; if
        one fails or is canceled, this job is canceled, unless ``run_anyway``.
        """
        kwargs = kwargs or {}
        payload = check_serializable(self.serializer, tuple(args), kwargs, arg_names)
        if len(payload) > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"the arguments of {func} encode to {len(payload)} bytes, over the "
                f"MAX_PAYLOAD_BYTES limit of {self.max_payload_bytes}; store large data "
                f"elsewhere (database, object storage) and pass its id"
            )
        if job_id is None:
            job_id = uuid.uuid4().hex
        elif not isinstance(job_id, str) or not job_id or len(job_id) > 200:
            raise ValueError(f"job_id must be a non-empty string of at most 200 characters, "
                             f"got {job_id!r}")
        if not isinstance(priority, int) or not -100 <= priority <= 100:
            raise ValueError(f"priority must be an integer from -100 to 100, got {priority!r}")
        at_ms = delay_ms = 0
        if at is not None:
            if at.tzinfo is None or at.utcoffset() is None:
                raise ValueError(
                    f"at={at!r} is a naive datetime; pass an aware one (with USE_TZ = True, "
                    f"use django.utils.timezone.now() + timedelta(...))"
                )
            at_ms = max(1, int(at.timestamp() * 1000))
        if delay is not None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
            if seconds < 0:
                raise ValueError(f"delay must not be negative, got {delay!r}")
            delay_ms = int(seconds * 1000)
        dep_ids: list[str] = []
        for dep in depends_on or ():
            if isinstance(dep, Job):
                if dep.queue.name != self.name:
                    raise ValueError(
                        f"job {dep.id} is in queue {dep.queue.name!r}: a job can only depend on "
                        f"jobs of its own queue ({self.name!r}), whose keys share one Redis "
                        f"slot so that release is atomic")
                dep_ids.append(dep.id)
            elif isinstance(dep, str) and dep:
                dep_ids.append(dep)
            else:
                raise TypeError(f"depends_on takes Job handles or job ids, got {dep!r}")
        if dep_ids and (at_ms or delay_ms):
            raise ValueError("a job cannot both be delayed and depend on other jobs")
        if timeout is None:
            timeout = self.default_timeout
        elif not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        fields = {
            "v": SCHEMA_VERSION,
            "id": job_id,
            "queue": self.name,
            "func": func,
            "ser": self.serializer.name,
            "payload": payload,
            "priority": priority,
            "timeout": timeout,
            "retry": retry.to_dict() if retry else None,
            "result_ttl": _ms(self.result_ttl if result_ttl is None else result_ttl),
            "failure_ttl": _ms(self.failure_ttl if failure_ttl is None else failure_ttl),
            "attempts": 0,
            "meta": meta or None,
        }
        k = self.keys
        call = Call(
            scripts.ENQUEUE_SCRIPT,
            [k.job(job_id), k.state("queued"), k.state("scheduled"), k.state("finished"),
             k.state("failed"), k.state("canceled"), k.seq,
             k.cron_last(once[0]) if once else k.seq, k.state("deferred")],
            [job_id, k.channel, at_ms, delay_ms, priority, once[1] if once else "",
             json.dumps(dep_ids) if dep_ids else "", "1" if run_anyway else "0",
             k.job_prefix, k.deps_prefix, k.done_prefix, *encode_fields(fields)],
        )
        return Prepared(self, job_id, call)

    def _send_steps(self, prepared: Sequence[Prepared]) -> Steps[list[Job[Any]]]:
        if len(prepared) == 1:
            replies = [(yield prepared[0].call)]
        elif prepared:
            replies = yield Batch([p.call for p in prepared])
        else:
            replies = []
        for p, reply in zip(prepared, replies):
            if reply[1] == b"missing":
                raise JobNotFound(
                    f"job {p.id} depends on job {reply[2].decode()}, which does not exist in "
                    f"queue {self.name!r} (never enqueued, or expired after its TTL)")
        return [Job(self, p.id) for p in prepared]

    def send(self, prepared: Prepared) -> Job[Any]:
        """Send a prepared job: one round trip (one script call)."""
        return self.run(self._send_steps([prepared]))[0]  # type: ignore[no-any-return]

    async def asend(self, prepared: Prepared) -> Job[Any]:
        return (await self.arun(self._send_steps([prepared])))[0]  # type: ignore[no-any-return]

    def send_many(self, prepared: Sequence[Prepared]) -> list[Job[Any]]:
        """Send many prepared jobs in one pipeline (one round trip for the lot)."""
        return self.run(self._send_steps(prepared))  # type: ignore[no-any-return]

    async def asend_many(self, prepared: Sequence[Prepared]) -> list[Job[Any]]:
        return await self.arun(self._send_steps(prepared))  # type: ignore[no-any-return]

    def enqueue(self, func: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                **options: Any) -> Job[Any]:
        """Enqueue a call of the registered function ``func``; see ``prepare`` for options."""
        return self.send(self.prepare(func, args, kwargs, **options))

    async def aenqueue(self, func: str, args: Sequence[Any] = (),
                       kwargs: dict[str, Any] | None = None, **options: Any) -> Job[Any]:
        return await self.asend(self.prepare(func, args, kwargs, **options))

    def enqueue_many(self, calls: Iterable[tuple[str, Sequence[Any], dict[str, Any]]],
                     **options: Any) -> list[Job[Any]]:
        """Enqueue many ``(func, args, kwargs)`` calls in one round trip."""
        return self.send_many([self.prepare(f, a, k, **options) for f, a, k in calls])

    # -- reading ------------------------------------------------------------------------------
    def job(self, job_id: str) -> Job[Any]:
        """A handle on a job by id (no round trip; the job may not exist)."""
        return Job(self, job_id)

    def _record_steps(self, job_id: str) -> Steps[JobRecord | None]:
        data = yield Cmd(("HGETALL", self.keys.job(job_id)))
        return JobRecord.from_hash(data) if data else None

    def fetch_record(self, job_id: str) -> JobRecord | None:
        return self.run(self._record_steps(job_id))  # type: ignore[no-any-return]

    async def afetch_record(self, job_id: str) -> JobRecord | None:
        return await self.arun(self._record_steps(job_id))  # type: ignore[no-any-return]

    def _status_steps(self, job_id: str) -> Steps[str | None]:
        value = yield Cmd(("HGET", self.keys.job(job_id), "status"))
        return value.decode() if value else None

    def job_status(self, job_id: str) -> str | None:
        return self.run(self._status_steps(job_id))  # type: ignore[no-any-return]

    async def ajob_status(self, job_id: str) -> str | None:
        return await self.arun(self._status_steps(job_id))  # type: ignore[no-any-return]

    def _counts_steps(self, states: Sequence[str]) -> Steps[dict[str, int]]:
        replies = yield Batch([Cmd(("ZCARD", self.keys.state(s))) for s in states])
        return dict(zip(states, (int(r) for r in replies)))

    def counts(self) -> dict[str, int]:
        """Jobs per state, in one round trip of O(1) commands."""
        return self.run(self._counts_steps(STATES))  # type: ignore[no-any-return]

    async def acounts(self) -> dict[str, int]:
        return await self.arun(self._counts_steps(STATES))  # type: ignore[no-any-return]

    def count(self, state: str = "queued") -> int:
        return self.run(self._counts_steps([state]))[state]  # type: ignore[no-any-return]

    async def acount(self, state: str = "queued") -> int:
        return (await self.arun(self._counts_steps([state])))[state]  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self.count("queued")

    def _ids_steps(self, state: str, offset: int, limit: int) -> Steps[list[str]]:
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must not be negative")
        if limit == 0:
            return []
        key = self.keys.state(state)
        # Terminal registries are scored by expiry: newest first. The others: next due first.
        cmd = "ZREVRANGE" if state in TERMINAL_STATES else "ZRANGE"
        ids = yield Cmd((cmd, key, offset, offset + limit - 1))
        return [i.decode() for i in ids]

    def _jobs_steps(self, state: str, offset: int, limit: int) -> Steps[list[JobRecord]]:
        ids = yield from self._ids_steps(state, offset, limit)
        if not ids:
            return []
        hashes = yield Batch([Cmd(("HGETALL", self.keys.job(i))) for i in ids])
        return JobRecord.decode_many(hashes)

    def job_ids(self, state: str = "queued", offset: int = 0, limit: int = 100) -> list[str]:
        return self.run(self._ids_steps(state, offset, limit))  # type: ignore[no-any-return]

    def jobs(self, state: str = "queued", offset: int = 0, limit: int = 100) -> list[JobRecord]:
        """A window of jobs in one state: two round trips, whatever the queue's size."""
        return self.run(self._jobs_steps(state, offset, limit))  # type: ignore[no-any-return]

    async def ajobs(self, state: str = "queued", offset: int = 0,
                    limit: int = 100) -> list[JobRecord]:
        return await self.arun(self._jobs_steps(state, offset, limit))  # type: ignore[no-any-return]

    def is_empty(self) -> bool:
        """True when no job is queued (others may be scheduled, running or deferred)."""
        return self.count("queued") == 0

    # -- changing jobs ------------------------------------------------------------------------
    def _cancel_steps(self, job_id: str) -> Steps[str | None]:
        k = self.keys
        st = yield Call(scripts.CANCEL_SCRIPT,
                        [k.job(job_id), k.state("queued"), k.state("scheduled"),
                         k.state("deferred"), k.state("canceled"), k.seq],
                        [job_id, k.done_prefix, k.channel, k.job_prefix, k.deps_prefix])
        return st.decode() if st else None

    def cancel(self, job_id: str) -> str | None:
        """Cancel a waiting job, or ask the worker running it to stop; the status after."""
        return self.run(self._cancel_steps(job_id))  # type: ignore[no-any-return]

    async def acancel(self, job_id: str) -> str | None:
        return await self.arun(self._cancel_steps(job_id))  # type: ignore[no-any-return]

    def _requeue_steps(self, job_ids: Sequence[str]) -> Steps[int]:
        k = self.keys
        calls = [Call(scripts.REQUEUE_SCRIPT,
                      [k.job(i), k.state("failed"), k.state("canceled"), k.state("queued"),
                       k.seq], [i, k.channel]) for i in job_ids]
        if not calls:
            return 0
        replies = yield Batch(calls)
        return sum(int(r) for r in replies)

    def requeue(self, *job_ids: str) -> int:
        """Put failed or canceled jobs back on the queue; returns how many moved."""
        return self.run(self._requeue_steps(job_ids))  # type: ignore[no-any-return]

    def requeue_failed(self, batch: int = 500) -> int:
        """Requeue every failed job, a window at a time; returns how many moved."""
        total = 0
        while True:
            ids = self.job_ids("failed", 0, batch)
            if not ids:
                return total
            moved = self.requeue(*ids)
            total += moved
            if moved == 0:
                return total

    def _delete_steps(self, job_ids: Sequence[str]) -> Steps[int]:
        k = self.keys
        order = ("scheduled", "queued", "started", "deferred", "finished", "failed", "canceled")
        calls = [Call(scripts.DELETE_SCRIPT, [k.job(i), *(k.state(s) for s in order), k.seq],
                      [i, k.job_prefix, k.deps_prefix, k.channel, k.done_prefix])
                 for i in job_ids]
        if not calls:
            return 0
        replies = yield Batch(calls)
        return sum(int(r) for r in replies)

    def delete(self, *job_ids: str) -> int:
        """Remove jobs from every state and delete their data; returns how many existed."""
        return self.run(self._delete_steps(job_ids))  # type: ignore[no-any-return]

    def empty(self, batch: int = 1000) -> int:
        """Delete every queued job; returns how many."""
        total = 0
        while True:
            ids = self.job_ids("queued", 0, batch)
            if not ids:
                return total
            total += self.delete(*ids)

    # -- waiting ------------------------------------------------------------------------------
    def _wait_steps(self, job_id: str, timeout: float | None) -> Steps[JobRecord]:
        deadline = None if timeout is None else time.monotonic() + timeout
        k = self.keys
        while True:
            reply = yield Call(scripts.WATCH_SCRIPT, [k.job(job_id)], [])
            if not reply:
                raise JobNotFound(f"job {job_id} not found in queue {self.name!r}")
            if isinstance(reply, list):
                return JobRecord.from_hash(reply)
            remaining = WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} did not end within {timeout} s")
            # BLMOVE from a list onto itself blocks until a token exists and never consumes it,
            # so any number of waiters wake on one notification. It blocks in slices: a block
            # must end before the client's read timeout (redis-py 8 applies one to blocking
            # commands), and each slice re-checks the job.
            yield Cmd(("BLMOVE", k.done(job_id), k.done(job_id), "RIGHT", "LEFT",
                       round(max(0.001, min(remaining, WAIT_SLICE)), 3)))

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        return self.run(self._wait_steps(job_id, timeout))  # type: ignore[no-any-return]

    async def await_(self, job_id: str, timeout: float | None = None) -> JobRecord:
        return await self.arun(self._wait_steps(job_id, timeout))  # type: ignore[no-any-return]

    # -- worker operations (described, run by the worker's own driver) ------------------------
    def claim_call(self, worker: str, n: int, lease_ms: int) -> Call:
        k = self.keys
        return Call(scripts.CLAIM_SCRIPT, [k.state("queued"), k.state("started")],
                    [k.job_prefix, n, worker, lease_ms])

    def finish_call(self, job_id: str, worker: str, result: bytes) -> Call:
        k = self.keys
        return Call(scripts.FINISH_SCRIPT,
                    [k.job(job_id), k.state("started"), k.state("queued"), k.state("finished"),
                     k.state("deferred"), k.seq, k.state("canceled")],
                    [job_id, worker, k.done_prefix, result, k.job_prefix, k.deps_prefix,
                     k.channel])

    def fail_call(self, job_id: str, worker: str, error: str, errors: str,
                  retry_delay_ms: int = -1, status: str = "failed") -> Call:
        k = self.keys
        return Call(scripts.FAIL_SCRIPT,
                    [k.job(job_id), k.state("started"), k.state("queued"), k.state("scheduled"),
                     k.state("failed"), k.state("canceled"), k.seq, k.state("deferred")],
                    [job_id, worker, k.done_prefix, k.channel, error, errors, retry_delay_ms,
                     status, k.job_prefix, k.deps_prefix])

    def maintain_call(self, max_deaths: int, limit: int = 1000) -> Call:
        k = self.keys
        return Call(scripts.MAINTAIN_SCRIPT,
                    [k.state("started"), k.state("queued"), k.state("failed"), k.seq,
                     k.state("scheduled"), k.state("finished"), k.state("canceled"),
                     k.state("deferred")],
                    [k.job_prefix, k.done_prefix, k.channel, max_deaths, limit,
                     k.deps_prefix])

    def renew_call(self, worker: str, lease_ms: int, job_ids: Sequence[str]) -> Call:
        k = self.keys
        return Call(scripts.RENEW_SCRIPT, [k.state("started")],
                    [k.job_prefix, worker, lease_ms, *job_ids])

    def release_call(self, job_id: str, worker: str) -> Call:
        k = self.keys
        return Call(scripts.RELEASE_SCRIPT,
                    [k.job(job_id), k.state("started"), k.state("queued"), k.seq],
                    [job_id, worker, k.channel])


__all__ = ["ACTIVE_STATES", "STATES", "TERMINAL_STATES", "PayloadTooLarge", "Prepared", "Queue"]
