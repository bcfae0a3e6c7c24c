"""The worker: claims jobs from its queues in priority order, runs them, records outcomes.

One asyncio event loop per worker process. ``async def`` jobs run as tasks on it; plain
functions run in a thread pool of the same size (``Executor``). The loop never polls:

* idle, it waits for a Pub/Sub message that a queue became non-empty (sent by the enqueue,
  retry, promotion and recovery scripts), having subscribed before it last found the queues
  empty, so no wake-up is missed;
* it claims up to its free slots plus a small prefetch buffer in one script call per queue, in
  the order the queues were given (strict priority), skipping queues known to be empty since
  their last message; a slot that frees takes the next buffered job at once, with no round
  trip in between;
* outcomes are written by a flusher that sends everything finished meanwhile in one pipeline,
  the finished jobs of one queue in one script call;
* a maintenance task beats the heartbeat, renews the leases of running jobs, recovers jobs
  whose lease expired (their worker died), and promotes scheduled jobs exactly when due.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import json
import logging
import os
import random
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from . import keys as keymod
from . import tracing
from .connection import RedisConnection
from .context import PROGRESS_INTERVAL, JobContext, set_current
from .counters import UNREGISTERED, JobCounters
from .cron import Schedule
from .errors import JobTimeout, PayloadError, RedisQError, UnknownFunction
from .executors import Executor
from .job import JobRecord
from .ops import Batch, Call, Cmd, one
from .queue import CLAIM_SCRIPT_JOBS, Queue, claimed_record, handoff_record
from .registry import Registered, Registry
from .registry import registry as default_registry
from .retry import class_path, retry_delay
from .scheduler import CronScheduler
from .scripts import HEARTBEAT_SCRIPT

log = logging.getLogger("django_redisq.worker")

#: Exit code of a process-mode child that must be replaced (a sync job hit its timeout).
EXIT_REPLACE = 75
#: Least seconds between two writes of the job counters with the outcomes (a busy worker adds
#: one small script call per queue this often, not one per pipeline); pending counts are also
#: written at every heartbeat and when the worker stops.
COUNTERS_INTERVAL = 1.0

#: An idle worker (no job running or prefetched) beats every IDLE_BEAT x ``heartbeat``: its
#: leases need no renewal, and the beat is all it sends (I1: under 1 command per second).
IDLE_BEAT = 2
#: Heartbeats between trims of the terminal registries (ids of expired hashes; the hashes
#: expire by themselves): once a minute at the default heartbeat.
TRIM_BEATS = 12

#: Seconds of work a worker claims ahead of its free slots, at its jobs' recent run time: a
#: prefetched job waits about this long at most, while other workers may be idle.
PREFETCH_WINDOW = 0.05
#: Most jobs claimed ahead of free slots, per slot, unless ``prefetch`` says otherwise; the
#: window above decides below that. Short jobs need room for whole batches: each claim and
#: each outcome flush costs the worker about as much as several no-op jobs. The buffer is
#: topped up once half of it is used, so at concurrency 10 a buffer of 200 makes each top-up
#: about one full claim (CLAIM_BATCH). A buffer of 300 (claims still of 100, so each is sent
#: with about 160 jobs left rather than 100) gained nothing that stood out of the noise: in
#: medians of five alternating pairs, two async workers drained 1% faster (3 pairs of 5), one
#: 6% slower, and the other drain rows moved between -8% and +32% in both directions.
PREFETCH_PER_SLOT = 20
#: Most jobs one claim round trip takes by default, unless the concurrency is higher (as
#: scripts of at most ``queue.CLAIM_SCRIPT_JOBS`` jobs each, so that Redis is never held
#: long). One claim is in flight at a time, so a busy worker runs at most this many jobs per
#: claim round trip: with two workers draining no-op jobs on two cores beside Redis, a claim
#: took 3.4 ms (median), its 40 buffered jobs ran out before it returned, and each worker was
#: idle 45% of the time. With claims of 100 and the buffer above (90 before, too small to top
#: up with 100), two workers drained async no-op jobs 11% faster (medians of six alternating
#: pairs: 24.5k against 22.0k jobs/s; D2), one worker sync ones 5% faster and async ones as
#: fast (D1). Going further does not pay: claims of 200 with a buffer of 400 gained 2-8% on the
#: other drains but lost 10% on two async workers (medians of seven alternating pairs), whose
#: claims then waited 10-15 ms behind each other's scripts and the CPU they share with Redis.
CLAIM_BATCH = 100


@dataclass
class WorkerOptions:
    concurrency: int = 10
    burst: bool = False
    max_jobs: int | None = None
    name: str | None = None
    #: Seconds a claimed job's lease lasts without renewal; a dead worker's jobs come back
    #: after at most ``lease + heartbeat``.
    lease: float = 30.0
    #: Seconds between heartbeats, lease renewals and recovery sweeps while jobs run (twice
    #: that when idle).
    heartbeat: float = 5.0
    #: A job whose worker died this many times is failed as a poison job.
    max_deaths: int = 3
    #: Seconds running jobs get to finish after SIGTERM/SIGINT before they are put back.
    grace: float = 30.0
    #: Promote delayed jobs exactly on time (and lead cron); without it they are promoted at
    #: each heartbeat.
    scheduler: bool = True
    #: Process-mode child: a sync job past its timeout takes the process down with it.
    exit_on_sync_timeout: bool = False
    #: Most jobs claimed in one round trip (``None``: CLAIM_BATCH, or the concurrency if
    #: higher; a claim takes no more than the free slots and the prefetch buffer have room for,
    #: in scripts of at most ``queue.CLAIM_SCRIPT_JOBS`` jobs).
    batch: int | None = None
    #: Most jobs claimed ahead of free slots, so that a slot that frees starts the next job
    #: without a round trip (``None``: PREFETCH_PER_SLOT x the concurrency; 0: never). The buffer
    #: adapts to the jobs' run time: only as many as the slots finish within
    #: ``PREFETCH_WINDOW`` at the recent pace, so a worker busy with long jobs holds none back
    #: from idle workers. Prefetched jobs hold leases and are put back on shutdown or
    #: suspension.
    prefetch: int | None = None
    #: Offer to take the next job of a queue found empty straight from its enqueue (the job
    #: comes in a Pub/Sub message, leased to this worker), which saves the claim round trip
    #: when idle. Not on a Redis Cluster (there ``PUBLISH`` counts one node's receivers), nor
    #: in burst mode or with ``max_jobs``.
    handoff: bool = True
    #: Extra fields shown in the heartbeat (e.g. the supervisor's pid).
    info: dict[str, Any] = field(default_factory=dict)
    #: Periodic jobs this worker may enqueue when it leads (needs ``scheduler``).
    schedules: list[Schedule] = field(default_factory=list)


class WorkerHooks:
    """Where a host framework plugs in; the defaults do nothing.

    ``run_sync`` runs in the job's thread around the function call, ``run_async`` on the loop
    around the coroutine (Django closes stale database connections there). ``event`` is
    awaited on the loop for ``job_started``, ``job_finished`` and ``job_failed``
    (``exc=``, and ``outcome=``: ``failed``, ``retried`` or ``timed_out``).
    """

    has_events = False

    def run_sync(self, record: JobRecord, fn: Callable[[], Any]) -> Any:
        return fn()

    async def run_async(self, record: JobRecord, fn: Callable[[], Awaitable[Any]]) -> Any:
        return await fn()

    async def event(self, name: str, record: JobRecord, **info: Any) -> None:
        return None


def default_worker_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """``{type, message, traceback}`` of an exception, even one whose ``str()`` raises."""
    try:
        message = str(exc)
    except Exception as err:  # a broken __str__ must not take the worker down
        message = f"<unprintable {type(exc).__name__}: str() raised {type(err).__name__}>"
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        tb = "".join(traceback.format_tb(exc.__traceback__))
        tb += f"{type(exc).__name__}: {message}\n"
    return {"type": class_path(type(exc)), "message": message, "traceback": tb}


def error_summary(err: dict[str, Any]) -> dict[str, Any]:
    """The job's ``error`` field: the last error without its traceback, which ``errors``
    already holds (stored once; ``JobRecord.from_hash`` puts it back)."""
    return {k: v for k, v in err.items() if k != "traceback"}


class _Finished:
    """An outcome waiting in the outbox: a job that finished with this encoded result."""

    __slots__ = ("job_id", "payload")

    def __init__(self, job_id: str, payload: bytes) -> None:
        self.job_id = job_id
        self.payload = payload


def job_extra(queue: str, rec: JobRecord) -> dict[str, Any]:
    """The ``extra`` of every log record about a job: structured logs filter on these."""
    return {"job_id": rec.id, "queue": queue, "function": rec.func, "attempt": rec.attempts}


def wait_seconds(rec: JobRecord) -> float | None:
    """Seconds from enqueue (or the due time of a delayed job or retry) to start."""
    if rec.started_at is None:
        return None
    since = rec.enqueued_at
    if rec.scheduled_for is not None and rec.scheduled_for <= rec.started_at:
        since = rec.scheduled_for if since is None else max(since, rec.scheduled_for)
    return None if since is None else max(0, rec.started_at - since) / 1000


class _Running:
    __slots__ = ("context", "is_async", "outcome", "queue", "record", "t0", "task")

    def __init__(self, queue: Queue, record: JobRecord, context: JobContext) -> None:
        self.queue = queue
        self.record = record
        self.context = context
        self.task: asyncio.Task[None] | None = None
        self.is_async = False
        self.t0 = time.monotonic()
        #: How the attempt ended (``counters.OUTCOMES``), once it has.
        self.outcome = ""


class Worker:
    """Serves ``queues`` (strict priority: earlier queues first) until stopped."""

    def __init__(
        self,
        queues: Sequence[Queue],
        *,
        options: WorkerOptions | None = None,
        registry: Registry | None = None,
        hooks: WorkerHooks | None = None,
        schedule_queues: dict[str, Queue] | None = None,
        executor: Callable[[int], Executor] | None = None,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        self.queues = list(queues)
        self.options = options or WorkerOptions()
        if self.options.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.registry = registry or default_registry
        self.hooks = hooks or WorkerHooks()
        #: Makes the executor from the concurrency: ``Executor`` (a thread pool) by default.
        self._make_executor: Callable[[int], Executor] = executor or Executor
        self.name = self.options.name or default_worker_name()
        self.prefix = self.queues[0].prefix
        self.lease_ms = int(self.options.lease * 1000)
        self.processed = 0
        self.failed = 0
        self.exit_code = 0
        self._by_name = {q.name: q for q in self.queues}
        #: Queues periodic jobs go to (they need not be queues this worker serves).
        self._schedule_queues = {**(schedule_queues or {}), **self._by_name}
        self._running: dict[tuple[str, str], _Running] = {}
        #: Claimed jobs waiting for a slot (the prefetch buffer), in claim order.
        self._ready: collections.deque[tuple[Queue, JobRecord]] = collections.deque()
        #: Jobs claimed as prefetched (marked so in Redis), and those of them that started
        #: since the last flush: the flush clears the mark of those still running.
        self._prefetched: set[tuple[str, str]] = set()
        self._pf_started: list[tuple[Queue, str]] = []
        self._prefetch = (self.options.concurrency * PREFETCH_PER_SLOT
                          if self.options.prefetch is None else max(0, self.options.prefetch))
        self._batch = self.options.batch or max(self.options.concurrency, CLAIM_BATCH)
        #: Moving average of job run times (seconds); None until a job has run.
        self._avg_run: float | None = None
        self._slots = 0
        self._claimed = 0
        self._maybe = {q.name: True for q in self.queues}
        #: Queues whose last claim came back full: the next one may take a round trip's worth.
        self._deep = {q.name: False for q in self.queues}
        #: The queues of each Redis deployment served: each has its own wake-up listener, as
        #: a queue's PUBLISH reaches only the subscribers of its own deployment.
        groups: dict[int, list[Queue]] = {}
        for q in self.queues:
            groups.setdefault(id(q.connection), []).append(q)
        self._deployments = list(groups.values())
        #: Deployments (ids of their connections) whose wake channels are subscribed.
        self._listening: set[int] = set()
        #: Each deployment's current Pub/Sub, and an event that makes its listener subscribe
        #: afresh (set when the master moved away from under it, see ``_follow_masters``).
        self._pubsubs: dict[int, tuple[RedisConnection, Any]] = {}
        self._moved: dict[int, asyncio.Event] = {}
        self._gen = {q.name: 0 for q in self.queues}
        #: Direct hand-off (see ``Queue.offer_call``): the queues it is used on, and those
        #: where a hand-off took this worker's offer, to be made again.
        opts = self.options
        self._handoff = {q.name for q in self.queues if opts.handoff and not opts.burst
                         and opts.max_jobs is None and q.connection.cluster is None}
        self._offer_ttl_ms = int(max(opts.heartbeat * IDLE_BEAT * 3, 10) * 1000)
        self._reoffer: set[str] = set()
        self._outbox: list[tuple[Queue, Call | Cmd | _Finished, asyncio.Future[Any]]] = []
        #: Job counts not yet added to the queues' stats hashes (written with the outbox).
        self.counters = JobCounters()
        self._counters_due = 0.0
        self._started_ms = int(time.time() * 1000)
        self._executor: Executor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sigints = 0
        self._suspended = False
        self._wrote_since_probe = False
        self._beat_fields: dict[str, Any] | None = None
        #: Read the suspension key at the next beat (a b"p" message announced a change).
        self._check_suspension = False
        self._beats = 0
        self._next_trim = 0.0
        self._stop_early: bool | None = None
        self._stop_lock = threading.Lock()

    # -- public control -----------------------------------------------------------------------
    def stop(self, graceful: bool = True) -> None:
        """Ask the worker to stop (thread-safe). ``graceful=False`` puts running jobs back now.
        Asked before ``run()`` has started, the worker stops as soon as it starts."""
        with self._stop_lock:
            loop = self._loop
            if loop is None:
                self._stop_early = graceful if self._stop_early is None else (
                    self._stop_early and graceful)
                return
        loop.call_soon_threadsafe(self._request_stop, graceful)

    def _request_stop(self, graceful: bool) -> None:
        self._stopping.set()
        if not graceful:
            self._hard.set()
        self._wake.set()
        self._slot_free.set()
        self._sched_wake.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop gracefully; a second SIGINT, or SIGQUIT, stops at once."""
        assert self._loop is not None
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        # Only SIGINTs count towards a hard stop: under a supervisor, one Ctrl-C brings a
        # SIGINT from the terminal and a SIGTERM from the supervisor, in either order.
        if sig == signal.SIGINT:
            self._sigints += 1
        hard = sig == signal.SIGQUIT or self._sigints > 1
        log.warning("worker %s: %s, %s", self.name, signal.Signals(sig).name,
                    "stopping now, putting running jobs back" if hard else
                    f"finishing running jobs (up to {self.options.grace:g} s)")
        self._request_stop(graceful=not hard)

    # -- main ---------------------------------------------------------------------------------
    async def run(self, install_signals: bool = False) -> int:
        """Serve until stopped, burst-drained or ``max_jobs`` done; returns the exit code."""
        with self._stop_lock:
            self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._hard = asyncio.Event()
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._sched_wake = asyncio.Event()
        #: Beat now (and so re-read the suspension key): set on a b"p" message.
        self._beat_now = asyncio.Event()
        self._outbox_ready = asyncio.Event()
        self._outbox_empty = asyncio.Event()
        self._outbox_empty.set()
        # Set when the background tasks must end. Not the same as stopping: while running jobs
        # drain, the maintenance task still renews their leases. redis-py may turn a
        # cancellation into a ConnectionError, so loops check this rather than trust cancel.
        self._closed = asyncio.Event()
        self._executor = self._make_executor(self.options.concurrency)
        if install_signals:
            self.install_signal_handlers()
        if self._stop_early is not None:
            self._request_stop(self._stop_early)
        self._pubsub_ready = asyncio.Event()
        tasks = [asyncio.create_task(self._listen(group), name=f"redisq-listen-{i}")
                 for i, group in enumerate(self._deployments)]
        tasks.append(asyncio.create_task(self._flush_loop(), name="redisq-flush"))
        for t in tasks:
            t.add_done_callback(self._background_done)
        try:
            await self._wait_any(self._pubsub_ready, self._stopping)
            tasks.append(asyncio.create_task(self._maintenance_loop(), name="redisq-maintain"))
            tasks[-1].add_done_callback(self._background_done)
            if self.options.scheduler and self.options.schedules:
                self.cron = CronScheduler(self.options.schedules, self._schedule_queues,
                                          self.name, self.options.heartbeat)
                tasks.append(asyncio.create_task(self.cron.run(self._closed), name="redisq-cron"))
                tasks[-1].add_done_callback(self._background_done)
            log.info("worker %s serving %s (concurrency %d%s)", self.name,
                     ", ".join(q.name for q in self.queues), self.options.concurrency,
                     ", burst" if self.options.burst else "")
            await self._fetch_loop()
            await self._drain()
        finally:
            await self._flushed()
            await self._write_counters()
            self._closed.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._deregister()
            self._executor.shutdown(wait=self._slots == 0)
        log.info("worker %s stopped: %d jobs done, %d failed", self.name, self.processed,
                 self.failed)
        return self.exit_code

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        """A background task must not die quietly: log it and stop the worker (a supervisor
        or the process manager restarts it) instead of wedging."""
        if task.cancelled() or self._closed.is_set():
            return
        exc = task.exception()
        log.critical("worker %s: internal task %s died: %r; stopping", self.name,
                     task.get_name(), exc, exc_info=exc)
        self.exit_code = 1
        self._request_stop(graceful=True)

    # -- fetching -----------------------------------------------------------------------------
    async def _fetch_loop(self) -> None:
        opts = self.options
        backoff = 0.1
        while not self._stopping.is_set():
            self._start_ready()
            prefetch = self._prefetch_now()
            free = opts.concurrency + prefetch - self._slots - len(self._ready)
            if opts.max_jobs is not None:
                left = opts.max_jobs - self._claimed
                if left <= 0 and not self._ready:
                    # The jobs taken run to their end, however long: the grace period is
                    # for stop requests, which still end this wait.
                    while self._slots and not self._stopping.is_set():
                        self._slot_free.clear()
                        await self._slot_free.wait()
                    return
                free = min(free, left)
            # While prefetched jobs still wait, top the buffer up only once it is half empty:
            # jobs that end one at a time (threads, staggered timers) would otherwise cost a
            # claim round trip each.
            if free <= 0 or self._suspended or (self._ready and free < max(1, prefetch // 2)):
                # Not ``_wake``: a wake-up that arrives meanwhile is remembered in ``_maybe``,
                # and waiting on a set event would spin without yielding to the loop. Resuming
                # sets ``_slot_free``.
                self._slot_free.clear()
                await self._slot_free.wait()  # set by stop() too
                continue
            self._wake.clear()
            try:
                claimed = await self._claim(min(free, self._batch))
                backoff = 0.1
            except (redis.RedisError, OSError) as exc:
                backoff = await self._backoff("claiming jobs", exc, backoff, self._stopping)
                continue
            if claimed:
                self._ready.extend(claimed)
                continue
            if opts.burst:
                # A sync job frees its slot when its thread ends, a moment before its outcome
                # is queued for writing: wait for the job itself, not only for its slot.
                if self._running or self._ready:
                    self._slot_free.clear()
                    await self._slot_free.wait()  # set by stop() too
                    continue
                # Outcomes written since the last full pass may have queued jobs (released
                # dependents, retries, jobs enqueued by jobs) whose wake-up message is still
                # on its way: write everything, then look at every queue once more.
                await self._flushed()
                try:
                    woke, _due = await self._maintain_all()
                except (redis.RedisError, OSError) as exc:
                    backoff = await self._backoff("looking for more jobs", exc, backoff,
                                                  self._stopping)
                    continue
                backoff = 0.1
                if woke or any(self._maybe.values()):
                    continue
                if self._wrote_since_probe:
                    self._wrote_since_probe = False
                    for name in self._maybe:
                        self._mark(name)
                    continue
                return
            await self._wake.wait()  # set by a wake-up message, and by stop()

    async def _claim(self, n: int) -> list[tuple[Queue, JobRecord]]:
        out: list[tuple[Queue, JobRecord]] = []
        # Jobs beyond the free slots are prefetched, and marked so (see claim_call).
        run_now = self.options.concurrency - self._slots - len(self._ready)
        for queue in self.queues:
            if n <= 0:
                break
            if not self._maybe[queue.name]:
                continue
            gen = self._gen[queue.name]
            offer = self._offer_ttl_ms if queue.name in self._handoff else 0
            # More than one script's worth only from a queue whose last claim came back full:
            # a claim of a queue that may be nearly empty costs one script, not several.
            want = n if self._deep[queue.name] else min(n, CLAIM_SCRIPT_JOBS)
            replies = await queue.arun(one(queue.claim_op(
                self.name, want, self.lease_ms, max(0, run_now), offer_ttl_ms=offer)))
            full = len(replies) >= want
            self._deep[queue.name] = full
            if offer and not full:
                self._reoffer.discard(queue.name)  # the claim emptied the queue: offer made
            for _at_ms, job_id, _fields in replies[max(0, run_now):]:
                self._prefetched.add((queue.name, job_id.decode(errors="replace")))
            run_now -= len(replies)
            if not full and self._gen[queue.name] == gen:
                self._maybe[queue.name] = False
            self._claimed += len(replies)
            n -= len(replies)
            for at_ms, job_id, fields in replies:
                try:
                    out.append((queue, claimed_record(job_id, fields, self.name, at_ms)))
                except PayloadError as exc:
                    self._reject(queue, job_id.decode(errors="replace"), exc)
            if full:
                break  # this queue may hold more: lower-priority queues wait (strict priority)
        return out

    def _reject(self, queue: Queue, job_id: str, exc: BaseException) -> None:
        """Fail a job whose hash cannot even be decoded. Its own failure TTL may be garbage
        too, so the queue's applies: the failed job stays visible for that long."""
        err = describe_exception(exc)
        log.error("job %s in %s is malformed: %s", job_id, queue.name, err["message"],
                  extra={"job_id": job_id, "queue": queue.name, "function": UNREGISTERED,
                         "attempt": None})
        self.failed += 1
        self.counters.record(queue.name, UNREGISTERED, "failed", None, None)
        self._send(queue, queue.fail_call(job_id, self.name, json.dumps(error_summary(err)),
                                          json.dumps([err]), failure_ttl=queue.failure_ttl))

    def _take_handoff(self, queue: Queue, message: bytes) -> None:
        """A job handed to this worker by its enqueue (our offer for ``queue`` went with it).
        It is leased to us and marked prefetched: start it, or put it back if no slot is free
        (or we are stopping): another worker, or this one later, claims it."""
        self._reoffer.add(queue.name)
        try:
            job_id, rec = handoff_record(message, self.name)
        except PayloadError as exc:
            # Not even an id: the lease expires and the claim path fails the job.
            log.error("worker %s: unreadable hand-off message on %s: %s", self.name,
                      queue.name, exc)
            return
        if isinstance(rec, PayloadError):
            self._reject(queue, job_id, rec)
            return
        if not self._takes_more():
            self._send(queue, queue.release_call(job_id, self.name))
            return
        self._claimed += 1
        self._prefetched.add((queue.name, job_id))
        self._ready.append((queue, rec))
        self._start_ready()

    def _takes_more(self) -> bool:
        """Whether a job handed over now could start: a slot is free (no prefetched job
        waits for it), and the worker is neither stopping nor suspended."""
        return (not self._stopping.is_set() and not self._suspended
                and self._slots + len(self._ready) < self.options.concurrency)

    def _offers_due(self) -> list[Queue]:
        """Queues to offer on again with the next write: those whose offer a hand-off took,
        once a slot is free, unless the queue is known to hold jobs (a claim offers then)."""
        if not self._reoffer or not self._takes_more():
            return []
        due = [n for n in self._reoffer if not self._maybe[n]]
        self._reoffer.difference_update(due)
        return [self._by_name[n] for n in due]

    def _offer_made(self, queue_name: str, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._reoffer.add(queue_name)
        elif not fut.result():  # jobs wait there: claim them (that claim offers when empty)
            self._reoffer.add(queue_name)
            self._mark(queue_name)

    def _withdraw_offers(self) -> None:
        """Stopping or suspended: take back our offers, those made and any on their way (this
        goes after them), so no more jobs are handed to us (one handed over meanwhile is put
        back when it arrives)."""
        for name in self._handoff:
            q = self._by_name[name]
            self._send(q, q.withdraw_call(self.name, self.lease_ms))
        self._reoffer.clear()

    def _prefetch_now(self) -> int:
        """How many jobs to hold beyond the free slots: what the slots finish within
        ``PREFETCH_WINDOW`` at the recent run time; none before a job has run."""
        avg = self._avg_run
        if not self._prefetch or avg is None:
            return 0
        expected = self.options.concurrency * PREFETCH_WINDOW / max(avg, 1e-6)
        return min(self._prefetch, int(expected))

    # -- running ------------------------------------------------------------------------------
    def _start_ready(self) -> None:
        """Start buffered jobs while slots are free (not once stopping: they go back)."""
        ready = self._ready
        while ready and self._slots < self.options.concurrency and not self._stopping.is_set():
            queue, rec = ready.popleft()
            if self._prefetched and (queue.name, rec.id) in self._prefetched:
                self._prefetched.discard((queue.name, rec.id))
                self._pf_started.append((queue, rec.id))
            self._start(queue, rec)

    def _release_ready(self, why: str) -> None:
        """Put prefetched jobs back on their queues (shutdown, suspension)."""
        if not self._ready:
            return
        log.info("worker %s: putting %d prefetched job(s) back (%s)", self.name,
                 len(self._ready), why)
        while self._ready:
            queue, rec = self._ready.popleft()
            self._prefetched.discard((queue.name, rec.id))
            self._claimed -= 1
            self._send(queue, queue.release_call(rec.id, self.name))

    def _start(self, queue: Queue, rec: JobRecord) -> None:
        ctx = JobContext(rec, queue, self.name)
        running = _Running(queue, rec, ctx)
        ctx._sink = lambda _ctx: self._progress_changed(running)
        self._running[(queue.name, rec.id)] = running
        self._slots += 1
        coro = (self._traced(running) if tracing.ENABLED and tracing.configured()
                else self._process(running))
        # In a context of its own: a task copies the current one, and a job is often started
        # from the end of the one before it (its slot freed), whose contextvars must not leak
        # into it: its trace span above all, which would make an untraced job its child.
        running.task = contextvars.Context().run(asyncio.create_task, coro)

    async def _traced(self, running: _Running) -> None:
        with tracing.job_span(running.record, running.queue.name):
            await self._process(running)

    def _release_slot(self) -> None:
        self._slots -= 1
        if self._ready:
            self._start_ready()
        self._slot_free.set()

    async def _process(self, running: _Running) -> None:
        queue, rec = running.queue, running.record
        t0 = time.monotonic()
        thread_holds_slot = False
        token = set_current(running.context)
        canceled = RedisQError("the job was canceled while running")
        try:
            if self.hooks.has_events:
                await self.hooks.event("job_started", rec)
            try:
                entry = self.registry.get(rec.func)
                running.is_async = entry.is_async
                args, kwargs = rec.call(queue.serializer.name)
                if entry.is_async:
                    result = await self._executor_async(entry, rec, args, kwargs)
                else:
                    thread_holds_slot = True
                    result = await self._executor_sync(entry, rec, args, kwargs)
                try:
                    payload = queue.serializer.dumps(result)
                except Exception as exc:
                    raise TypeError(
                        f"the return value of {rec.func} (a {type(result).__name__}) cannot be "
                        f"encoded with the {queue.serializer.name} serializer: {exc}"
                    ) from exc
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    raise  # shutdown: the job is put back by _drain
                outcome = self._record_failure(running, canceled, status="canceled")
            # Not only Exception: SystemExit or another BaseException raised by the job's code
            # is that job's error too. Left to propagate, it would kill the worker (or, from an
            # async job, end the task unseen) and leave the job to its lease: run again after
            # each death, and failed in the end as WorkerDied, with its own traceback lost.
            # Signals do not raise here: the worker handles SIGINT and SIGTERM on its loop.
            except BaseException as exc:
                if running.context.cancel_requested:
                    outcome = self._record_failure(running, exc, status="canceled")
                else:
                    outcome = self._record_failure(running, exc)
                    if self.hooks.has_events:
                        await self.hooks.event("job_failed", rec, exc=exc,
                                               outcome=running.outcome)
                    if (isinstance(exc, JobTimeout) and not running.is_async
                            and self.options.exit_on_sync_timeout):
                        self._replace_process()
            else:
                if running.context.cancel_requested:
                    # A sync job that returned after its cancel was requested still ends
                    # canceled: that is what the caller asked for.
                    outcome = self._record_failure(running, canceled, status="canceled")
                else:
                    outcome = "finished"
                    self.processed += 1
                    self._end_attempt(running, "finished", None)
                    self._send(queue, _Finished(rec.id, payload))
                    if self.hooks.has_events:
                        await self.hooks.event("job_finished", rec, result=result)
            took = time.monotonic() - t0
            avg = self._avg_run
            self._avg_run = took if avg is None else avg + 0.2 * (took - avg)
            if log.isEnabledFor(logging.INFO):  # the record's extra is built per job
                log.info("job %s %s on %s: %s in %.3f s", rec.id, rec.func, queue.name,
                         outcome, took, extra={**job_extra(queue.name, rec), "outcome": outcome})
        finally:
            _reset_current(token)
            self._running.pop((queue.name, rec.id), None)
            if not thread_holds_slot:
                self._release_slot()
            elif self.options.burst:
                self._slot_free.set()  # the burst loop waits for jobs, not only slots

    async def _executor_async(self, entry: Registered, rec: JobRecord, args: list[Any],
                              kwargs: dict[str, Any]) -> Any:
        assert self._executor is not None
        return await self._executor.run_async(
            lambda: self.hooks.run_async(rec, lambda: entry.func(*args, **kwargs)), rec.timeout
        )

    async def _executor_sync(self, entry: Registered, rec: JobRecord, args: list[Any],
                             kwargs: dict[str, Any]) -> Any:
        assert self._executor is not None
        loop = asyncio.get_running_loop()

        def thread_done() -> None:
            # Called on the loop (the executor delivers there), after the job's result:
            # the slot is released once the job's own step has run.
            loop.call_soon(self._release_slot)

        return await self._executor.run_sync(
            lambda: self.hooks.run_sync(rec, lambda: entry.func(*args, **kwargs)),
            rec.timeout,
            thread_done,
        )

    def _record_failure(self, running: _Running, exc: BaseException,
                        status: str = "failed") -> str:
        queue, rec = running.queue, running.record
        err = describe_exception(exc)
        err["attempt"] = rec.attempts
        err["at"] = int(time.time() * 1000)
        err["worker"] = self.name
        errors = [*rec.errors, err]
        delay = None
        if status == "failed" and rec.retry and not isinstance(exc, (UnknownFunction,
                                                                     PayloadError)):
            delay = retry_delay(rec.retry, rec.attempts, exc)
        if delay is None:
            self.failed += 1
        self._end_attempt(running, "canceled" if status == "canceled" else
                          "timed_out" if isinstance(exc, JobTimeout) else
                          "failed" if delay is None else "retried", exc, err["message"])
        self._send(queue, queue.fail_call(
            rec.id, self.name, json.dumps(error_summary(err)), json.dumps(errors),
            -1 if delay is None else int(delay * 1000), status))
        if delay is not None:
            return f"retry in {delay:.3g} s ({type(exc).__name__})"
        if status == "canceled":
            return "canceled"
        log.warning("job %s %s failed: %s: %s", rec.id, rec.func, err["type"], err["message"],
                    extra=job_extra(queue.name, rec))
        return f"failed ({err['type']})"

    def _end_attempt(self, running: _Running, outcome: str, exc: BaseException | None,
                     message: str = "") -> None:
        """Count the attempt, mark its span, and write its last progress before its outcome
        (the outcome is sent right after, so both go in the same pipeline, in order)."""
        rec = running.record
        running.outcome = outcome
        func = UNREGISTERED if isinstance(exc, UnknownFunction) else rec.func
        self.counters.record(running.queue.name, func, outcome, wait_seconds(rec),
                             time.monotonic() - running.t0)
        if tracing.ENABLED and tracing.configured():
            tracing.record_outcome(outcome, exc, message)
        ctx = running.context
        ctx.detach()
        fields = ctx.take_update()
        if fields:
            self._send(running.queue, running.queue.progress_call(rec.id, self.name, fields))

    # -- progress -----------------------------------------------------------------------------
    def _progress_changed(self, running: _Running) -> None:
        """From any thread: the job changed its progress or meta; write it soon (throttled)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._schedule_progress, running)

    def _schedule_progress(self, running: _Running) -> None:
        delay = running.context.last_write + PROGRESS_INTERVAL - time.monotonic()
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._write_progress, running)
        else:
            self._write_progress(running)

    def _write_progress(self, running: _Running) -> None:
        rec = running.record
        if self._running.get((running.queue.name, rec.id)) is not running:
            return  # ended: its last values went with its outcome
        fields = running.context.take_update()
        if fields:
            running.context.last_write = time.monotonic()
            self._send(running.queue, running.queue.progress_call(rec.id, self.name, fields))

    def _replace_process(self) -> None:
        """Process mode: a runaway sync job cannot be stopped inside this process, so the
        process ends (its supervisor starts another) once the failure is written."""
        log.error("worker %s: a sync job hit its timeout; this process exits to kill it and "
                  "is replaced", self.name)
        self.exit_code = EXIT_REPLACE
        self._request_stop(graceful=False)

    # -- writing outcomes ---------------------------------------------------------------------
    def _send(self, queue: Queue, call: Call | Cmd | _Finished) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._outbox.append((queue, call, fut))
        self._outbox_empty.clear()
        self._outbox_ready.set()
        return fut

    async def _flushed(self, timeout: float = 30.0) -> None:
        """Wait until every outcome sent so far is written (bounded: Redis may be down)."""
        if self._outbox or not self._outbox_empty.is_set():
            await self._wait_any(self._outbox_empty, timeout=timeout)

    def _note_prefetched_started(self) -> None:
        """Clear the prefetch mark of prefetched jobs that started and still run (written
        with the next outcomes; those that already ended need nothing)."""
        if not self._pf_started:
            return
        started, self._pf_started = self._pf_started, []
        for queue, job_id in started:
            running = self._running.get((queue.name, job_id))
            # Not once its outcome is on its way (a job stays in ``_running`` while its
            # job_finished/job_failed hooks run): the HSET would follow the outcome and, for a
            # job kept for no time (result_ttl=0), write a hash that never expires.
            if running is not None and not running.outcome:
                self._send(queue, queue.started_call(job_id))

    async def _flush_loop(self) -> None:
        """Write outcomes in batches: everything finished while a round trip was in flight
        goes out in the next single pipeline."""
        backoff = 0.1
        while not self._closed.is_set():
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            self._note_prefetched_started()
            while self._outbox:
                batch, self._outbox = self._outbox, []
                try:
                    await self._flush(batch)
                    backoff = 0.1
                except (redis.RedisError, OSError) as exc:
                    self._outbox[:0] = batch
                    backoff = await self._backoff("recording job outcomes", exc, backoff)
            self._outbox_empty.set()

    async def _flush(self, batch: list[tuple[Queue, Call | Cmd | _Finished,
                                             asyncio.Future[Any]]]) -> None:
        """One pipeline per Redis deployment; the finished jobs of each queue go in one
        script call (their replies are one code per job, handed to each job's future). At
        most every ``COUNTERS_INTERVAL``, the job counters of those queues go along."""
        loop = asyncio.get_running_loop()
        # Offers to make again go with their queue's finished jobs (the outcomes that freed
        # the slots), in the same script call; on a queue without any, as their own call.
        offers: dict[str, asyncio.Future[Any]] = {}
        for q in self._offers_due():
            offers[q.name] = fut = loop.create_future()
            fut.add_done_callback(functools.partial(self._offer_made, q.name))
        by_conn: dict[int, tuple[Queue, list[Call | Cmd], list[list[asyncio.Future[Any]]],
                                 dict[str, tuple[Queue, list[tuple[str, bytes]],
                                                 list[asyncio.Future[Any]]]]]] = {}
        queues: dict[int, dict[str, Queue]] = {}
        for queue, op, fut in batch:
            entry = by_conn.setdefault(id(queue.connection), (queue, [], [], {}))
            queues.setdefault(id(queue.connection), {})[queue.name] = queue
            if isinstance(op, _Finished):
                group = entry[3].setdefault(queue.name, (queue, [], []))
                group[1].append((op.job_id, op.payload))
                group[2].append(fut)
            else:
                entry[1].append(op)
                entry[2].append([fut])
        for name, fut in offers.items():
            q = self._by_name[name]
            entry = by_conn.setdefault(id(q.connection), (q, [], [], {}))
            if name not in entry[3]:
                queues.setdefault(id(q.connection), {})[name] = q
                entry[1].append(q.offer_call(self.name, self.lease_ms, self._offer_ttl_ms))
                entry[2].append([fut])
        with_counters = time.monotonic() >= self._counters_due
        if with_counters:
            self._counters_due = time.monotonic() + COUNTERS_INTERVAL
        for conn, (queue, calls, futures, finished) in by_conn.items():
            many = len(calls)
            for q, results, futs in finished.values():
                offer = offers.get(q.name)  # its reply follows the codes
                calls.append(q.finish_many_call(
                    self.name, results,
                    offer=None if offer is None else (self.lease_ms, self._offer_ttl_ms)))
                futures.append(futs if offer is None else [*futs, offer])
            counted: list[tuple[str, list[Any]]] = []
            for q in queues[conn].values() if with_counters else ():
                flat = self.counters.take(q.name)
                if flat:  # after the outcomes: their replies are not read
                    counted.append((q.name, flat))
                    calls.append(q.stats_call(flat))
            try:
                replies = await queue.arun(one(Batch(calls)))
            except BaseException:
                for name, flat in counted:
                    self.counters.restore(name, flat)
                for fut in offers.values():  # not written: offered again with the next write
                    if not fut.done():
                        fut.cancel()
                raise
            for i, (futs, reply) in enumerate(zip(futures, replies)):
                for fut, value in (zip(futs, reply) if i >= many else ((futs[0], reply),)):
                    if not fut.done():
                        fut.set_result(value)
        self._wrote_since_probe = True

    async def _write_counters(self) -> None:
        """Write every pending job count now (heartbeat and shutdown; bounded by the Redis
        client's timeouts). Counts whose write fails stay pending."""
        for queue in self.queues:
            flat = self.counters.take(queue.name)
            if not flat:
                continue
            try:
                await queue.arun(one(queue.stats_call(flat)))
            except (redis.RedisError, OSError):
                self.counters.restore(queue.name, flat)
                return

    # -- shutdown -----------------------------------------------------------------------------
    async def _drain(self) -> None:
        """Let running jobs finish within the grace period, then put the rest back."""
        # Jobs cancelled below must be put back, not recorded as canceled (see _process),
        # however the fetch loop ended.
        self._stopping.set()
        self._withdraw_offers()
        self._release_ready("stopping")
        running = [r.task for r in self._running.values() if r.task is not None]
        if running and not self._hard.is_set():
            grace = asyncio.ensure_future(asyncio.sleep(self.options.grace))
            hard = asyncio.ensure_future(self._hard.wait())
            waiter = asyncio.gather(*running, return_exceptions=True)
            pending: set[asyncio.Future[Any]] = {waiter, grace, hard}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            grace.cancel()
            hard.cancel()
        leftover = list(self._running.values())
        for r in leftover:
            if r.task is not None and not r.task.done():
                r.task.cancel()
        if leftover:
            await asyncio.gather(*(r.task for r in leftover if r.task), return_exceptions=True)
            log.warning("worker %s: putting %d running job(s) back on their queues", self.name,
                        len(leftover))
            for r in leftover:
                self._send(r.queue, r.queue.release_call(r.record.id, self.name))
        await self._flushed()

    async def _deregister(self) -> None:
        queue = self.queues[0]
        try:
            await queue.arun(one(Cmd(("ZREM", keymod.workers_key(self.prefix), self.name))))
            await queue.arun(one(Cmd(("DEL", keymod.worker_key(self.prefix, self.name)))))
        except (redis.RedisError, OSError):
            pass

    # -- maintenance --------------------------------------------------------------------------
    async def _maintenance_loop(self) -> None:
        opts = self.options
        next_beat = 0.0
        backoff = 0.1
        while not self._closed.is_set():
            try:
                now = time.monotonic()
                if now >= next_beat or self._beat_now.is_set():
                    self._beat_now.clear()
                    await self._beat()
                    await self._write_counters()
                    self._follow_masters()
                    busy = self._running or self._ready
                    next_beat = now + opts.heartbeat * (1 if busy else IDLE_BEAT)
                self._sched_wake.clear()
                _woke, due_in = await self._maintain_all()
                backoff = 0.1
            except (redis.RedisError, OSError) as exc:
                backoff = await self._backoff("maintenance", exc, backoff)
                continue
            timeout = max(0.0, next_beat - time.monotonic())
            if opts.scheduler and due_in is not None:
                timeout = min(timeout, due_in)
            events = [self._beat_now, *([self._sched_wake] if opts.scheduler else [])]
            await self._wait_any(self._closed, *events, timeout=timeout)

    async def _maintain_all(self) -> tuple[bool, float | None]:
        """Recover expired leases and promote due jobs on every queue.

        Returns whether any job became claimable (the burst loop asks) and the seconds until
        the earliest scheduled job, or ``None`` (the timer sleeps that long).
        """
        woke = False
        next_due: float | None = None
        trim = time.monotonic() >= self._next_trim
        if trim:
            self._next_trim = time.monotonic() + self.options.heartbeat * TRIM_BEATS
        for queue in self.queues:
            recovered, poisoned, promoted, due_ms, now_ms = await queue.arun(
                one(queue.maintain_call(self.options.max_deaths, trim=trim)))
            if recovered or promoted:
                woke = True
                self._mark(queue.name)
            if recovered or poisoned:
                log.warning("queue %s: %d job(s) of dead workers put back, %d failed as poison",
                            queue.name, recovered, poisoned)
            if due_ms >= 0:
                due = max(0.0, (due_ms - now_ms) / 1000)
                next_due = due if next_due is None else min(next_due, due)
        return woke, next_due

    async def _beat(self) -> None:
        # The heartbeat and a read of the suspension key go in one pipeline; when suspension
        # changed, beat once more so that the registry shows the new state at once.
        running = await self._beat_once()
        if running is None:
            running = await self._beat_once() or []
        if self._pf_started:  # started prefetched jobs: their mark goes within a heartbeat
            self._outbox_ready.set()
        by_queue: dict[str, list[str]] = {}
        for r in running:
            by_queue.setdefault(r.queue.name, []).append(r.record.id)
        for queue, rec in self._ready:  # prefetched jobs hold leases too
            by_queue.setdefault(queue.name, []).append(rec.id)
        for name, ids in by_queue.items():
            q = self._by_name[name]
            lost, cancel = await q.arun(one(q.renew_call(self.name, self.lease_ms, ids)))
            for job_id in lost:
                lost_job = self._running.get((name, job_id.decode()))
                log.warning("job %s: lease lost (this worker was too slow to renew it); "
                            "another worker may run it", job_id.decode(),
                            extra=job_extra(name, lost_job.record) if lost_job else None)
            for job_id in cancel:
                self._cancel_running(name, job_id.decode())

    async def _beat_once(self) -> list[_Running] | None:
        """One heartbeat; the running jobs it reported, or None if suspension changed.

        The worker's fields are sent only when they changed, and the suspension key is read
        only while suspended (to see it expire): a suspension is announced by a Pub/Sub
        message, and read again whenever the subscription is (re)made.
        """
        queue = self.queues[0]
        ttl_ms = int(max(self.options.heartbeat * IDLE_BEAT * 3, 10) * 1000)
        running = list(self._running.values())
        fields = {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": ",".join(q.name for q in self.queues),
            "concurrency": self.options.concurrency,
            "started": self._started_ms,
            "jobs": ",".join(f"{r.queue.name}/{r.record.id}" for r in running[:100]),
            "processed": self.processed,
            "failed": self.failed,
            "state": "suspended" if self._suspended else ("busy" if running else "idle"),
            **self.options.info,
        }
        flat: list[Any] = []
        if fields != self._beat_fields:
            for k, v in fields.items():
                flat += [k, v]
        self._beats += 1
        prune = 3600 * 1000 if self._beats % 12 == 1 else 0
        ops: list[Call | Cmd] = [Call(
            HEARTBEAT_SCRIPT,
            [keymod.workers_key(self.prefix), keymod.worker_key(self.prefix, self.name)],
            [self.name, ttl_ms, prune, *flat])]
        check = self._suspended or self._check_suspension
        self._check_suspension = False
        if check:
            ops.append(Cmd(("EXISTS", keymod.suspended_key(self.prefix))))
        replies = await queue.arun(one(Batch(ops)))
        self._beat_fields = fields
        if check:
            return None if self._set_suspended(bool(replies[1])) else running
        return running

    async def _read_suspension(self) -> None:
        """At start, before the first claim: are workers suspended (``rqsuspend``)?"""
        queue = self.queues[0]
        try:
            exists = await queue.arun(one(Cmd(("EXISTS", keymod.suspended_key(self.prefix)))))
        except (redis.RedisError, OSError):
            return  # the first heartbeat reads it again
        self._set_suspended(bool(exists))

    def _set_suspended(self, suspended: bool) -> bool:
        """Follow the suspension key; True when the state changed."""
        if suspended == self._suspended:
            return False
        self._suspended = suspended
        if suspended:
            log.info("worker %s: suspended; running jobs finish, no new job is taken until "
                     "rqresume", self.name)
            self._withdraw_offers()
            self._release_ready("suspended")
        else:
            log.info("worker %s: resumed; taking jobs again", self.name)
            for name in self._maybe:  # look at every queue once: jobs came in meanwhile
                self._mark(name)
            self._slot_free.set()
        return True

    def _cancel_running(self, queue_name: str, job_id: str) -> None:
        """Stop a running job whose cancel was requested: an async job's task is cancelled; a
        sync job in process mode takes its process down; a sync job in a thread is flagged
        (``current_job().cancel_requested``) and ends canceled whenever it returns."""
        running = self._running.get((queue_name, job_id))
        if running is None:
            for i, (queue, rec) in enumerate(self._ready):
                if queue.name == queue_name and rec.id == job_id:
                    del self._ready[i]  # prefetched, not started: it ends canceled unrun
                    self._prefetched.discard((queue_name, job_id))
                    log.info("job %s: canceled before it started", job_id)
                    self._record_failure(_Running(queue, rec, JobContext(rec, queue, self.name)),
                                         RedisQError("the job was canceled"), status="canceled")
                    self._slot_free.set()
                    break
            return
        if running.context.cancel_requested:
            return
        running.context.cancel_requested = True
        log.info("job %s: cancel requested", job_id,
                 extra=job_extra(queue_name, running.record))
        if running.task is None:
            return
        if running.is_async:
            running.task.cancel()
        elif self.options.exit_on_sync_timeout:
            self._record_failure(running, RedisQError("the job was canceled while running"),
                                 status="canceled")
            self._replace_process()

    # -- wake-ups -----------------------------------------------------------------------------
    def _mark(self, queue_name: str) -> None:
        self._gen[queue_name] += 1
        self._maybe[queue_name] = True
        self._wake.set()

    def _follow_masters(self) -> None:
        """Make a listener left on a former master (Sentinel) subscribe on the current one.
        Checked after each heartbeat, whose write takes the commands to the new master: what
        was published while the listener was on the old node is lost, and a queue whose
        wake-up is lost gets no other until it empties, so the new subscription claims from
        every queue."""
        for conn, pubsub in self._pubsubs.values():
            if not conn.on_master(pubsub):
                self._master_moved(conn)

    def _master_moved(self, conn: RedisConnection) -> None:
        moved = self._moved[id(conn)]
        if not moved.is_set():
            log.warning("worker %s: the master of %s has moved: listening on the new one",
                        self.name, conn.masked_url)
            moved.set()

    async def _listen(self, queues: list[Queue]) -> None:
        """Follow the wake channels of ``queues`` (all on one Redis deployment); reconnect
        (and assume work) after an outage, or when the master moved (``_follow_masters``)."""
        by_channel = {q.keys.channel.encode(): q.name for q in queues}
        handoffs = {channel.encode(): q for q in queues if q.name in self._handoff
                    for channel in (q.keys.handoff(self.name),
                                    q.keys.handoff_netstrings(self.name))}
        cid = id(queues[0].connection)
        moved = self._moved[cid] = asyncio.Event()
        backoff = 0.1
        while not self._closed.is_set():
            client = pubsub = None
            try:
                client, pubsub = await queues[0].connection.new_pubsub()
                await pubsub.subscribe(*by_channel, *handoffs)
                confirmed = 0
                deadline = time.monotonic() + 10
                while confirmed < len(by_channel) + len(handoffs):
                    if time.monotonic() > deadline:
                        raise redis.ConnectionError("no reply to SUBSCRIBE within 10 s")
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg and msg["type"] == "subscribe":
                        confirmed += 1
                # Suspension is announced on these channels: read the key once subscribed,
                # so a suspension made while we were not listening is not missed.
                await self._read_suspension()
                # Subscribed: anything enqueued from now on is announced, so claim everything.
                for name in by_channel.values():
                    self._mark(name)
                self._listening.add(cid)
                if len(self._listening) == len(self._deployments):
                    self._pubsub_ready.set()
                backoff = 0.1
                moved.clear()
                self._pubsubs[cid] = (queues[0].connection, pubsub)
                follow = asyncio.ensure_future(self._follow(pubsub, by_channel, handoffs))
                moving = asyncio.ensure_future(moved.wait())
                try:
                    await asyncio.wait((follow, moving), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    moving.cancel()
                    if not follow.done():
                        follow.cancel()
                if follow.done():  # ended by itself (not cancelled just above)
                    await follow  # its error, if any, is handled below
            except (redis.RedisError, OSError) as exc:
                backoff = await self._backoff(
                    f"listening for new jobs of {', '.join(by_channel.values())} at "
                    f"{queues[0].connection.masked_url}", exc, backoff)
            finally:
                self._pubsubs.pop(cid, None)
                try:
                    if pubsub is not None:
                        await pubsub.aclose()
                    if client is not None:
                        await client.aclose()
                except Exception:
                    pass

    async def _follow(self, pubsub: Any, by_channel: dict[bytes, str],
                      handoffs: dict[bytes, Queue]) -> None:
        """Act on the messages of a subscribed Pub/Sub until its connection fails."""
        async for msg in pubsub.listen():
            if msg["type"] != "message":
                continue
            handed = handoffs.get(msg["channel"])
            if handed is not None:
                # A demoted master relays what the new one publishes, but a hand-off counts
                # only the master's own receivers: not ours, so the job went elsewhere.
                if handed.connection.on_master(pubsub):
                    self._take_handoff(handed, msg["data"])
                else:
                    self._master_moved(handed.connection)
                continue
            queue_name = by_channel.get(msg["channel"])
            if queue_name is None:
                continue
            data = msg["data"]
            if data == b"s":
                self._sched_wake.set()
            elif data == b"p":  # rqsuspend / rqresume: re-read suspension now
                self._check_suspension = True
                self._beat_now.set()
            elif data.startswith(b"c:"):
                self._cancel_running(queue_name, data[2:].decode(errors="replace"))
            else:
                self._mark(queue_name)

    # -- helpers ------------------------------------------------------------------------------
    async def _backoff(self, what: str, exc: BaseException, delay: float,
                       until: asyncio.Event | None = None) -> float:
        """Wait before retrying after a Redis error (with jitter, so that workers do not
        reconnect in lock-step); cut short only by ``until`` (default: shutdown's end)."""
        if self._closed.is_set():
            return delay
        log.error("worker %s: Redis error while %s: %s; retrying in %.1f s", self.name, what,
                  exc, delay)
        await self._wait_any(until or self._closed, timeout=delay * random.uniform(0.5, 1.5))
        return min(delay * 2, 5.0)

    @staticmethod
    async def _wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
        if not events:
            await asyncio.sleep(timeout or 0)
            return
        for e in events:
            if e.is_set():
                return
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()


def _reset_current(token: Any) -> None:
    from .context import _current

    _current.reset(token)
