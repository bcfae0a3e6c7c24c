"""A queue: enqueue, inspect, cancel, requeue and wait, plus the operations workers use.

Each public method has a sync and an async form sharing one implementation (see ``ops``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import scripts, tracing
from .connection import RedisConnection
from .errors import JobNotFound, NotReplicated, PayloadError, RedisQError
from .job import SCHEMA_VERSION, Job, JobRecord, encode_fields
from .keys import ACTIVE_STATES, STATES, TERMINAL_STATES, QueueKeys
from .limits import Limits
from .ops import Batch, Call, Cmd, Driver, Steps
from .retry import Retry
from .serializers import Serializer, check_serializable, get_serializer

DEFAULT_RESULT_TTL = 24 * 3600.0
DEFAULT_FAILURE_TTL = 7 * 24 * 3600.0
DEFAULT_TIMEOUT = 180.0
#: The latest due time and the longest delay a job may have: far beyond any real use, and
#: well inside what datetime (and so the admin) can show in any time zone.
MAX_DUE_MS = 221_845_392_000_000  # 9000-01-01 UTC
MAX_DELAY_SECONDS = 100 * 365.25 * 86400
DEFAULT_MAX_PAYLOAD = 512 * 1024
#: Most jobs one claim script takes. A script holds Redis, which serves no other client
#: meanwhile: a claim of 50 jobs ran 0.52 ms (median, SLOWLOG) on the benchmark machine, 4.9
#: million instructions (bench/redis_cost.py). Larger claims go as several scripts in one
#: pipeline (``claim_op``): one round trip, and Redis serves others between them.
CLAIM_SCRIPT_JOBS = 50
#: How long (ms) the marker of a pushed outbox entry is kept: a repeated push of the entry
#: within this time enqueues nothing.
OUTBOX_MARKER_TTL = 7 * 24 * 3600 * 1000
#: Longest single blocking wait of ``Job.get()``, in seconds (it loops until its timeout).
WAIT_SLICE = 2.0


class PayloadTooLarge(RedisQError, ValueError):
    """The encoded arguments exceed ``MAX_PAYLOAD_BYTES``."""


#: Jobs per ENQUEUE_MANY call: a bulk enqueue holds Redis for about 2 ms per call at most,
#: so other clients' commands get their turn between calls.
ENQUEUE_MANY_CHUNK = 100


def _enqueue_many_calls(prepared: Sequence[Prepared]) -> list[Call]:
    """Script calls that enqueue ``prepared`` in order: ENQUEUE_MANY for runs of plain jobs,
    ENQUEUE for jobs with a ``once`` key (cron ticks, outbox entries)."""
    calls: list[Call] = []
    keys: list[str] = []
    args: list[Any] = []

    def close_run() -> None:
        if keys:
            calls.append(Call(scripts.ENQUEUE_MANY_SCRIPT, list(keys), list(args), parse=list))
            keys.clear()
            args.clear()

    for p in prepared:
        if len(p.call.keys) != 1:
            close_run()
            calls.append(Call(p.call.script, p.call.keys, p.call.args, parse=_as_list))
            continue
        keys.append(p.call.keys[0])
        args.append(len(p.call.args))
        args.extend(p.call.args)
        if len(keys) == ENQUEUE_MANY_CHUNK:
            close_run()
    close_run()
    return calls


def _as_list(reply: Any) -> list[Any]:
    return [reply]


def _flatten(replies: list[list[Any]]) -> list[Any]:
    return [r for chunk in replies for r in chunk]


def _first(reply: list[Any]) -> Any:
    return reply[0]


def _netstrings(data: bytes) -> list[bytes]:
    """Split ``b"3:abc1:x"`` into ``[b"abc", b"x"]`` (malformed data raises PayloadError)."""
    out: list[bytes] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            colon = data.index(b":", pos)
            size = int(data[pos:colon])
            pos = colon + 1 + size
            if size < 0 or pos > end:
                raise ValueError("truncated")
            out.append(data[colon + 1:pos])
    except ValueError as exc:
        raise PayloadError(f"malformed job notification: {exc}") from None
    return out


def _packed_strings(data: bytes) -> list[bytes]:
    """The strings of a MessagePack array of strings, as Redis' ``cmsgpack.pack`` encodes a
    Lua list of strings (malformed data raises PayloadError)."""
    try:
        head = data[0]
        if 0x90 <= head <= 0x9F:
            count, pos = head & 0x0F, 1
        elif head in (0xDC, 0xDD):
            pos = 3 if head == 0xDC else 5
            count = int.from_bytes(data[1:pos], "big")
        else:
            raise ValueError(f"no array (first byte {head:#x})")
        out: list[bytes] = []
        for _ in range(count):
            tag = data[pos]
            if 0xA0 <= tag <= 0xBF:
                size, pos = tag & 0x1F, pos + 1
            elif 0xD9 <= tag <= 0xDB:
                width = 1 << (tag - 0xD9)  # str 8, 16, 32
                size = int.from_bytes(data[pos + 1:pos + 1 + width], "big")
                pos += 1 + width
            else:
                raise ValueError(f"no string (byte {tag:#x} at {pos})")
            if pos + size > len(data):
                raise ValueError("truncated")
            out.append(data[pos:pos + size])
            pos += size
        if pos != len(data):
            raise ValueError("bytes after the array")
    except (IndexError, ValueError) as exc:
        raise PayloadError(f"malformed job notification: {exc}") from None
    return out


def _end_record(token: bytes | None, job_id: str) -> JobRecord | None:
    """The ended job an end token (the job's hash, see terminate() in the scripts) holds;
    None for no token, or for WATCH's placeholder ('1', which decodes to no ended job)."""
    if token is None or token == b"1":
        return None
    record = JobRecord.from_hash(_string_list(token))
    return record if record.is_terminal and record.id == job_id else None


def _string_list(data: bytes) -> list[bytes]:
    """The strings of a script's message (a waiter's token, a hand-off): a MessagePack array,
    or netstrings from a script of an earlier version."""
    return _packed_strings(data) if data[:1] >= b"\x80" else _netstrings(data)


def _claim_reply(reply: list[Any]) -> tuple[int, list[tuple[bytes, list[bytes]]]]:
    return int(reply[0]), [(pair[0], pair[1]) for pair in reply[1]]


def _merge_claims(replies: list[tuple[int, list[tuple[bytes, list[bytes]]]]]
                  ) -> list[tuple[int, bytes, list[bytes]]]:
    return [(at_ms, job_id, fields) for at_ms, pairs in replies for job_id, fields in pairs]


def claimed(record: JobRecord, worker: str, at_ms: int) -> JobRecord:
    """A record read by the claim script, updated with what the claim wrote."""
    record.status = "started"
    record.started_at = at_ms
    record.worker = worker
    record.attempts += 1
    return record


def claimed_record(job_id: bytes, fields: list[bytes], worker: str, at_ms: int) -> JobRecord:
    """The record of a job leased to ``worker`` at ``at_ms``, from its fields as read before
    the lease (a claim's reply, a hand-off message). Raises ``PayloadError`` when they do not
    decode, or name another job (its outcome, written by that id, would miss this one)."""
    record = JobRecord.from_hash(fields)
    if record.id.encode() != job_id:
        raise PayloadError(f"malformed job hash: its id field {record.id!r} is not the id of "
                           f"its key")
    return claimed(record, worker, at_ms)


def _offer_member(worker: str, lease_ms: int) -> str:
    """A worker's entry in a queue's set of direct-hand-off offers (read by the scripts)."""
    return f"{lease_ms}|{worker}"


def handoff_record(message: bytes, worker: str) -> tuple[str, JobRecord | PayloadError]:
    """The job in a direct hand-off message (see the ENQUEUE script): its id, and its record
    as a claim returns it (leased to ``worker``), or why the record does not decode. Raises
    ``PayloadError`` when not even the id can be read."""
    parts = _string_list(message)
    if len(parts) < 3 or parts[1] != b"id":
        raise PayloadError(f"hand-off message without a job id: {message[:80]!r}")
    job_id = parts[2].decode(errors="replace")
    try:
        at_ms = int(parts[0])
    except ValueError:
        return job_id, PayloadError(f"hand-off message with a bad time: {parts[0]!r}")
    try:
        return job_id, claimed_record(parts[2], parts[1:], worker, at_ms)
    except PayloadError as exc:
        return job_id, exc


#: The job fields an ENQUEUE call passes by position, from its 6th argument on (see ENQUEUE in
#: the scripts); the others follow as field, value pairs.
ENQUEUE_FIELDS = ("v", "queue", "func", "payload", "timeout", "result_ttl", "failure_ttl")


def enqueue_fields(call: Call) -> dict[str, Any]:
    """The job fields an ENQUEUE call (``Prepared.call``) writes, besides ``id``, ``status``
    and ``enqueued_at``."""
    n = len(ENQUEUE_FIELDS)
    fields = dict(zip(ENQUEUE_FIELDS, call.args[5:5 + n]))
    pairs = call.args[5 + n:]
    fields.update(zip(pairs[::2], pairs[1::2]))
    return fields


def enqueue_options(at_ms: int, delay_ms: int, tick: int | str | None,
                    dep_ids: list[str]) -> str:
    """ENQUEUE's options argument: '' for a plain job, which takes the script's short path."""
    if not (at_ms or delay_ms or tick is not None or dep_ids):
        return ""
    return json.dumps([at_ms, delay_ms, "" if tick is None else str(tick), dep_ids])


def new_job_id() -> str:
    """A random job id: a version-4 UUID's 32 hex digits (``uuid.uuid4().hex``, built in a
    third of the time: an enqueue makes one)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def _ms(seconds: float) -> int:
    """A TTL in ms; a negative TTL means "keep forever" and stays -1."""
    return -1 if seconds < 0 else int(seconds * 1000)


@dataclass
class Prepared:
    """A job checked and encoded, ready to be sent (now, or after a transaction commits)."""

    queue: Queue
    id: str
    call: Call
    #: The outbox marker key (see ``prepare(outbox=...)``), else None.
    marker: str | None = None

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
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
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
        #: After an enqueue, ``WAIT`` until this many replicas acknowledged it (0: do not wait),
        #: so that an enqueue that returned survives a failover to one of them.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._driver = Driver(lambda: f"queue {self.name!r} at {self.connection.masked_url}")

    def __repr__(self) -> str:
        return f"<Queue {self.name} {self.connection.masked_url}>"

    # -- running steps ------------------------------------------------------------------------
    def run(self, steps: Steps[Any]) -> Any:
        return self._driver.drive(self.connection.client, steps)

    async def arun(self, steps: Steps[Any]) -> Any:
        return await self._driver.adrive(self.connection.aclient, steps)

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
        outbox: str | None = None,
        limits: Limits | None = None,
    ) -> Prepared:
        """Check and encode a job without touching Redis.

        Raises ``TypeError`` for arguments the serializer cannot encode and ``ValueError`` for
        bad options, so mistakes surface in the caller, before anything is sent. ``once`` is
        ``(schedule name, tick ms)``: the job is sent only if no later tick was (cron).
        ``depends_on`` keeps the job ``deferred`` until those jobs (of this queue) finish; if
        one fails or is canceled, this job is canceled, unless ``run_anyway``. ``outbox`` is a
        transactional-outbox entry's token: sending the prepared job again (the relay, after a
        crash) enqueues nothing, even if the job already ended (``prepared.marker`` is the key
        that records it; keep it with ``OUTBOX_MARKER_TTL``). ``limits`` (from
        ``@job(limit_key=..., max_concurrency=..., rate_limit=...)``) are resolved here, in the
        caller: the key function runs now, and workers only read the result.
        """
        if once and outbox:
            raise ValueError("a job cannot be both a periodic tick (once) and an outbox entry")
        kwargs = kwargs or {}
        payload = check_serializable(self.serializer, tuple(args), kwargs, arg_names)
        if len(payload) > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"the arguments of {func} encode to {len(payload)} bytes, over the "
                f"MAX_PAYLOAD_BYTES limit of {self.max_payload_bytes}; store large data "
                f"elsewhere (database, object storage) and pass its id"
            )
        # A new random id names no job yet, so the script need not look for one (see ENQUEUE);
        # an outbox entry's or a cron tick's id may have been sent before.
        fresh = job_id is None and not once and not outbox
        if job_id is None:
            job_id = new_job_id()
        elif (not isinstance(job_id, str) or not job_id or len(job_id) > 200
              or not job_id.isprintable() or job_id in (".", "..")):
            # Printable: an id is shown and put in URLs (the admin's job pages); "." and ".."
            # would be read as path steps there.
            raise ValueError(f"job_id must be a non-empty string of at most 200 printable "
                             f"characters (no tabs, newlines or other control characters), "
                             f"and not '.' or '..', got {job_id!r}")
        if not isinstance(priority, int) or not -100 <= priority <= 100:
            raise ValueError(f"priority must be an integer from -100 to 100, got {priority!r}")
        at_ms = delay_ms = 0
        if at is not None and delay is not None:
            raise ValueError("give at= or delay=, not both (with .using(), pass at=None or "
                             "delay=None to drop the one set before)")
        if at is not None:
            if not isinstance(at, datetime):
                raise TypeError(f"at= takes an aware datetime, got {at!r}")
            if at.tzinfo is None or at.utcoffset() is None:
                raise ValueError(
                    f"at={at!r} is a naive datetime; pass an aware one (with USE_TZ = True, "
                    f"use django.utils.timezone.now() + timedelta(...))"
                )
            at_ms = max(1, int(at.timestamp() * 1000))
            if at_ms > MAX_DUE_MS:
                raise ValueError(f"at={at!r} is past the year 9000; no job waits that long")
        if delay is not None:
            if isinstance(delay, bool) or not isinstance(delay, (int, float, timedelta)):
                raise TypeError(f"delay= takes seconds (a number) or a timedelta, got {delay!r}")
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
            if not 0 <= seconds < MAX_DELAY_SECONDS:
                raise ValueError(f"delay must be a finite number of seconds from 0 to "
                                 f"{MAX_DELAY_SECONDS:g} (100 years), got {delay!r}")
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
        # One dependency named twice (a handle and its id) is one dependency: it ends once.
        dep_ids = list(dict.fromkeys(dep_ids))
        if dep_ids and (at_ms or delay_ms):
            raise ValueError("a job cannot both be delayed and depend on other jobs")
        if timeout is None:
            timeout = self.default_timeout
        elif (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
              or not 0 < timeout < math.inf):
            raise ValueError(f"timeout must be a finite positive number of seconds, got "
                             f"{timeout!r}")
        # The fields every job has go by position (see ENQUEUE_FIELDS); the others as pairs,
        # defaults left out (the record reads them back as such): no ``attempts`` (the claim
        # counts from 0), no ``priority`` 0, no ``ser`` json; ``id`` and ``status`` are
        # written by the script.
        extra = {
            "ser": None if self.serializer.name == "json" else self.serializer.name,
            "priority": priority or None,
            "retry": retry.to_dict() if retry else None,
            "meta": meta or None,
            "trace": tracing.carrier() if tracing.ENABLED else None,
        }
        if limits is not None:
            extra.update(limits.fields(args, kwargs))
        k = self.keys
        # ``once`` is (key, tick): the script enqueues only if the key holds no tick >= this
        # one, and records it. Cron ticks use it for "exactly once per tick"; an outbox entry
        # uses tick 1 on its own marker key for "at most once per entry".
        if once:
            once_key, tick = k.cron_last(once[0]), once[1]
        elif outbox:
            once_key, tick = k.outbox_pushed(outbox), 1
        else:
            once_key, tick = None, None
        call = Call(
            scripts.ENQUEUE_SCRIPT,
            [k.job(job_id), once_key] if once_key else [k.job(job_id)],
            [job_id, k.base, priority,
             ("1" if run_anyway else "0") if dep_ids else ("new" if fresh else "0"),
             enqueue_options(at_ms, delay_ms, tick, dep_ids),
             SCHEMA_VERSION, self.name, func, payload, "" if timeout is None else timeout,
             _ms(self.result_ttl if result_ttl is None else result_ttl),
             _ms(self.failure_ttl if failure_ttl is None else failure_ttl),
             *encode_fields(extra)],
        )
        return Prepared(self, job_id, call, once_key if outbox else None)

    def _send_steps(self, prepared: Sequence[Prepared]) -> Steps[list[Job[Any]]]:
        yield from self._send_replies_steps(prepared)
        return [Job(self, p.id) for p in prepared]

    def _send_replies_steps(self, prepared: Sequence[Prepared]) -> Steps[list[Any]]:
        """Send prepared jobs (and ``WAIT`` for ``wait_replicas``); the ENQUEUE replies."""
        acked = self.wait_replicas
        if not prepared:
            replies = []
        elif self._needs_pipeline(prepared):
            ops: list[Call | Cmd] = []
            for p in prepared:
                ops.append(p.call)
                if p.marker:
                    # Outbox entries: the marker gets its lifetime in the same round trip.
                    ops.append(Cmd(("PEXPIRE", p.marker, OUTBOX_MARKER_TTL)))
            if self.wait_replicas:
                # WAIT counts the replicas that have this connection's writes: same pipeline,
                # last (and sent again after scripts re-run for NOSCRIPT).
                ops.append(Cmd(("WAIT", self.wait_replicas, self.wait_timeout_ms),
                               follows_writes=True))
            all_replies = yield Batch(ops)
            if self.wait_replicas:
                acked = all_replies[-1]
                ops, all_replies = ops[:-1], all_replies[:-1]
            replies = [r for r, op in zip(all_replies, ops) if isinstance(op, Call)]
            # A script reloaded after NOSCRIPT ran after its PEXPIRE: set those again.
            again = [op for r, op in zip(all_replies, ops) if isinstance(op, Cmd) and r == 0]
            if again:
                yield Batch(again)
        elif len(prepared) == 1:
            replies = [(yield prepared[0].call)]
        else:
            replies = yield Batch(_enqueue_many_calls(prepared), parse=_flatten)
        for p, reply in zip(prepared, replies):
            self._check_reply(p, reply)
        if int(acked) < self.wait_replicas:
            raise NotReplicated(
                f"{len(prepared)} job(s) of queue {self.name!r} reached the master at "
                f"{self.connection.masked_url} but only {acked} of {self.wait_replicas} "
                f"replica(s) confirmed them within {self.wait_timeout_ms} ms: they are "
                f"queued, yet a failover now could lose them (first id {prepared[0].id})")
        return replies

    def _needs_pipeline(self, prepared: Sequence[Prepared]) -> bool:
        """Whether sending needs more than the script calls: WAIT after them, or the
        lifetimes of outbox markers."""
        return bool(self.wait_replicas) or any(p.marker for p in prepared)

    def _check_reply(self, p: Prepared, reply: Any) -> None:
        if reply[1] == b"missing":
            raise JobNotFound(
                f"job {p.id} depends on job {reply[2].decode()}, which does not exist in "
                f"queue {self.name!r} (never enqueued, or expired after its TTL)")

    async def asend_once(self, prepared: Prepared) -> bool:
        """Send a job prepared with ``once`` (a cron tick), as any enqueue (``WAIT_REPLICAS``
        included); True if this call enqueued it, False if that tick was sent already."""
        replies = await self.arun(self._send_replies_steps([prepared]))
        return bool(replies[0][0])

    def send(self, prepared: Prepared) -> Job[Any]:
        """Send a prepared job: one round trip (one script call)."""
        if self._needs_pipeline([prepared]):
            return self.run(self._send_steps([prepared]))[0]  # type: ignore[no-any-return]
        # The common case, one script call, skips the steps machinery (see Driver.call).
        self._check_reply(prepared, self._driver.call(self.connection.client, prepared.call))
        return Job(self, prepared.id)

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
        # A status this package did not write may not be UTF-8: shown, not fatal (as ids).
        return value.decode(errors="replace") if value else None

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
        # Ids written by this package are UTF-8; a member written otherwise is shown, not fatal.
        return [i.decode(errors="replace") for i in ids]

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
        return st.decode(errors="replace") if st else None

    def cancel(self, job_id: str) -> str | None:
        """Cancel a waiting job, or ask the worker running it to stop; the status after."""
        return self.run(self._cancel_steps(job_id))  # type: ignore[no-any-return]

    async def acancel(self, job_id: str) -> str | None:
        return await self.arun(self._cancel_steps(job_id))  # type: ignore[no-any-return]

    def _requeue_steps(self, job_ids: Sequence[str]) -> Steps[int]:
        k = self.keys
        calls = [Call(scripts.REQUEUE_SCRIPT,
                      [k.job(i), k.state("failed"), k.state("canceled"), k.state("queued"),
                       k.seq, k.done(i)], [i, k.channel]) for i in job_ids]
        if not calls:
            return 0
        replies = yield Batch(calls)
        return sum(int(r) for r in replies)

    def requeue(self, *job_ids: str) -> int:
        """Put failed or canceled jobs back on the queue; returns how many moved."""
        return self.run(self._requeue_steps(job_ids))  # type: ignore[no-any-return]

    def _snapshot(self, state: str, batch: int) -> list[str]:
        """Every id in ``state`` now, read a window at a time (a job that moves meanwhile may
        be read twice: it is listed once)."""
        ids: dict[str, None] = {}
        offset = 0
        while True:
            window = self.job_ids(state, offset, batch)
            ids.update(dict.fromkeys(window))
            if len(window) < batch:
                return list(ids)
            offset += batch

    def requeue_failed(self, batch: int = 500) -> int:
        """Requeue every job that is failed now; returns how many moved. Jobs that fail while
        this runs (some of those just requeued) stay failed: each job runs once per call."""
        total = 0
        ids = self._snapshot("failed", batch)
        for i in range(0, len(ids), batch):
            total += self.requeue(*ids[i:i + batch])
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
        """Delete every job queued now (not those enqueued while this runs); returns how
        many."""
        total = 0
        ids = self._snapshot("queued", batch)
        for i in range(0, len(ids), batch):
            total += self.delete(*ids[i:i + batch])
        return total

    # -- waiting ------------------------------------------------------------------------------
    def _wait_steps(self, job_id: str, timeout: float | None) -> Steps[JobRecord]:
        """Register as a waiter and block until the job ends, in one round trip; then one
        more to read the ended job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        k = self.keys
        done = k.done(job_id)
        while True:
            remaining = WAIT_SLICE if deadline is None else deadline - time.monotonic()
            # BLMOVE from a list onto itself blocks until a token exists and never consumes it,
            # so any number of waiters wake on one notification. It blocks in slices: a block
            # must end before the client's read timeout (redis-py 8 applies one to blocking
            # commands), and each slice re-checks the job.
            reply, token = yield Batch([
                Call(scripts.WATCH_SCRIPT, [k.job(job_id), done], []),
                Cmd(("BLMOVE", done, done, "RIGHT", "LEFT",
                     round(max(0.001, min(remaining, WAIT_SLICE)), 3))),
            ])
            if not reply:
                # No hash, but maybe an end token: a job kept for no time (result_ttl=0) that
                # ended between two slices of this wait, its hash deleted as it ended. A
                # token outlives an incarnation of the id only until an enqueue reuses it.
                record = _end_record(token, job_id)
                if record is not None:
                    return record
                raise JobNotFound(f"job {job_id} not found in queue {self.name!r}")
            if isinstance(reply, list):
                return JobRecord.from_hash(reply)
            record = _end_record(token, job_id)
            if record is not None:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} did not end within {timeout} s")

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        return self.run(self._wait_steps(job_id, timeout))  # type: ignore[no-any-return]

    async def await_(self, job_id: str, timeout: float | None = None) -> JobRecord:
        return await self.arun(self._wait_steps(job_id, timeout))  # type: ignore[no-any-return]

    # -- worker operations (described, run by the worker's own driver) ------------------------
    def claim_call(self, worker: str, n: int, lease_ms: int, run_now: int | None = None,
                   offer_ttl_ms: int = 0) -> Call:
        """Claim up to ``n`` queued jobs (highest priority first) under a lease. The reply is
        ``(claimed_at_ms, [(id, hash fields as read before the claim), ...])``: apply
        ``claimed()`` to each decoded record for the fields the claim wrote. Jobs beyond the
        first ``run_now`` (default: all run now) are marked prefetched: should the worker die
        before it starts them (and clears the mark), their recovery counts no death.

        With ``offer_ttl_ms``, a claim that leaves the queue empty also offers, for that long,
        to take the next job directly (see ``offer_call``)."""
        k = self.keys
        keys = [k.state("queued"), k.state("started")]
        args: list[Any] = [k.job_prefix, n, worker, lease_ms, n if run_now is None else run_now]
        if offer_ttl_ms:
            keys.append(k.idle)
            args += (offer_ttl_ms, _offer_member(worker, lease_ms))
        return Call(scripts.CLAIM_SCRIPT, keys, args, parse=_claim_reply)

    def claim_op(self, worker: str, n: int, lease_ms: int, run_now: int,
                 offer_ttl_ms: int = 0) -> Batch:
        """``claim_call`` for up to ``n`` jobs in one round trip, as claims of at most
        ``CLAIM_SCRIPT_JOBS`` jobs each, pipelined: Redis serves other clients between two
        scripts, never during one. The reply is ``[(claimed_at_ms, id, hash fields as read
        before the claim), ...]``. The offer, if any, goes with the last claim, which finds the
        queue empty when the ones before it emptied it."""
        calls: list[Call] = []
        left = n
        while left > 0:
            size = min(left, CLAIM_SCRIPT_JOBS)
            left -= size
            calls.append(self.claim_call(worker, size, lease_ms, min(run_now, size),
                                         offer_ttl_ms=0 if left else offer_ttl_ms))
            run_now = max(0, run_now - size)
        return Batch(calls, parse=_merge_claims)  # one call alone goes as a plain command

    def offer_call(self, worker: str, lease_ms: int, ttl_ms: int) -> Call:
        """Offer, for ``ttl_ms``, to take this queue's next job directly: an enqueue onto the
        empty queue leases it to ``worker`` and publishes it on ``keys.handoff(worker)``,
        which saves the worker's claim round trip. One job per offer. The reply is 0 (no
        offer) when jobs wait in the queue: claim them instead."""
        k = self.keys
        return Call(scripts.OFFER_SCRIPT, [k.state("queued"), k.idle],
                    [ttl_ms, _offer_member(worker, lease_ms)])

    def withdraw_call(self, worker: str, lease_ms: int) -> Cmd:
        """Take back ``worker``'s offer (it stops, or is suspended)."""
        return Cmd(("ZREM", self.keys.idle, _offer_member(worker, lease_ms)))

    def started_call(self, job_id: str) -> Cmd:
        """A prefetched job started: its recovery counts a death again."""
        return Cmd(("HSET", self.keys.job(job_id), "pf", "0"))

    def finish_call(self, job_id: str, worker: str, result: bytes) -> Call:
        """Record one finished job; the reply is its code (see ``finish_many_call``)."""
        return self.finish_many_call(worker, [(job_id, result)], parse=_first)

    def finish_many_call(self, worker: str, results: Sequence[tuple[str, bytes]],
                         parse: Callable[[Any], Any] | None = None,
                         offer: tuple[int, int] | None = None) -> Call:
        """Record finished jobs ``(id, encoded result)`` in one script call; the reply has one
        code per job: 1 recorded, 0 gone, -1 owned by another worker, -2 not finishable.

        ``offer=(lease_ms, ttl_ms)`` also makes ``offer_call``'s offer, whose reply then
        follows the codes."""
        k = self.keys
        args: list[Any] = [worker, k.done_prefix, k.job_prefix, k.deps_prefix, k.channel]
        for job_id, result in results:
            args += (job_id, result)
        keys = [k.state("started"), k.state("queued"), k.state("finished"),
                k.state("deferred"), k.seq, k.state("canceled")]
        if offer is not None:
            keys.append(k.idle)
            args += (offer[1], _offer_member(worker, offer[0]))
        call = Call(scripts.FINISH_SCRIPT, keys, args)
        if parse is not None:
            call.parse = parse
        return call

    def fail_call(self, job_id: str, worker: str, error: str, errors: str,
                  retry_delay_ms: int = -1, status: str = "failed",
                  failure_ttl: float | None = None) -> Call:
        """``failure_ttl`` (seconds) replaces the hash's own, for a hash that cannot be read."""
        k = self.keys
        return Call(scripts.FAIL_SCRIPT,
                    [k.job(job_id), k.state("started"), k.state("queued"), k.state("scheduled"),
                     k.state("failed"), k.state("canceled"), k.seq, k.state("deferred")],
                    [job_id, worker, k.done_prefix, k.channel, error, errors, retry_delay_ms,
                     status, k.job_prefix, k.deps_prefix,
                     "" if failure_ttl is None else _ms(failure_ttl)])

    def maintain_call(self, max_deaths: int, limit: int = 1000, trim: bool = True) -> Call:
        """Recover expired leases, promote due jobs and, with ``trim``, drop expired ids from
        the terminal registries. Reply: ``(recovered, poisoned, promoted, next_due_ms or -1,
        now_ms)``."""
        k = self.keys
        return Call(scripts.MAINTAIN_SCRIPT,
                    [k.state("started"), k.state("queued"), k.state("failed"), k.seq,
                     k.state("scheduled"), k.state("finished"), k.state("canceled"),
                     k.state("deferred"), k.stats],
                    [k.job_prefix, k.done_prefix, k.channel, max_deaths, limit,
                     k.deps_prefix, "1" if trim else "0"])

    def renew_call(self, worker: str, lease_ms: int, job_ids: Sequence[str]) -> Call:
        k = self.keys
        return Call(scripts.RENEW_SCRIPT, [k.state("started")],
                    [k.job_prefix, worker, lease_ms, *job_ids])

    def stats_call(self, increments: Sequence[Any]) -> Call:
        """Add ``[field, n, field, n, ...]`` to this queue's stats hash (``counters``)."""
        return Call(scripts.STATS_SCRIPT, [self.keys.stats], list(increments))

    def progress_call(self, job_id: str, worker: str, fields: Sequence[Any]) -> Call:
        """Write a running job's progress/meta ``[field, value, ...]`` if ``worker`` runs it."""
        return Call(scripts.PROGRESS_SCRIPT, [self.keys.job(job_id)], [worker, *fields])

    def release_call(self, job_id: str, worker: str) -> Call:
        k = self.keys
        return Call(scripts.RELEASE_SCRIPT,
                    [k.job(job_id), k.state("started"), k.state("queued"), k.seq,
                     k.state("canceled"), k.state("deferred")],
                    [job_id, worker, k.channel, k.done_prefix, k.deps_prefix])


__all__ = ["ACTIVE_STATES", "STATES", "TERMINAL_STATES", "PayloadTooLarge", "Prepared", "Queue"]
