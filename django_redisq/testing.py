"""Helpers for testing code that enqueues jobs.

Two ways to run jobs in a test:

* **Eager mode** (``REDISQ["MODE"] = "eager"``): ``.delay()`` and ``.adelay()`` run the job at
  once in the calling process and return a finished handle (``EagerJob``). No worker and no
  Redis are needed. The call still goes through the real checks and serializer, so arguments
  the queue would reject raise ``TypeError`` as they would in production, and the job sees its
  arguments as a worker would (decoded from the payload: tuples arrive as lists).
* **run_jobs()**: jobs go to the real Redis queues, and ``run_jobs()`` drains them in this
  process through the real worker engine (claim, run, retry, finish), then returns counts.

What eager mode does, and does not, imitate:

* a job that raises ends ``failed``: ``status == "failed"``, ``exc_info`` holds the traceback,
  ``get()`` raises ``JobFailed``; nothing is raised by ``.delay()`` itself;
* ``Retry`` policies apply, without waiting: a failing job is run again at once, up to
  ``max`` more times, for the exception types in ``on`` (``attempts`` and ``errors`` count);
* ``current_job()`` works inside the job, and the ``job_started`` / ``job_finished`` /
  ``job_failed`` signals are sent;
* a return value the serializer cannot encode fails the job, as on a worker;
* not imitated: ``delay``/``at`` (the job runs now), ``depends_on`` (runs now), ``timeout``
  (not enforced), unique ``job_id`` (always runs), and ``ENQUEUE_ON_COMMIT`` (the job runs at
  the call, inside the caller's transaction, so it sees rows the caller has not committed).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import signals
from .engine.context import JobContext, set_current
from .engine.errors import PayloadError, UnknownFunction
from .engine.job import SCHEMA_VERSION, Job, JobRecord
from .engine.queue import Prepared, enqueue_fields
from .engine.registry import registry
from .engine.retry import retry_delay
from .engine.worker import Worker, describe_exception

EAGER_WORKER = "eager"


class EagerJob(Job[Any]):
    """A job that already ran in-process; its state lives in memory, not in Redis.

    Reading it (``status``, ``result``, ``exc_info``, ``get()``) never touches Redis.
    """

    @property
    def status(self) -> str | None:
        return self.record.status

    async def astatus(self) -> str | None:
        return self.record.status

    def refresh(self) -> EagerJob:
        return self

    async def arefresh(self) -> EagerJob:
        return self

    @property
    def record(self) -> JobRecord:
        assert self._record is not None
        return self._record

    def cancel(self) -> str | None:
        """An eager job has already ended: nothing to cancel; returns its status."""
        return self.record.status

    async def acancel(self) -> str | None:
        return self.record.status

    def get(self, timeout: float | None = None) -> Any:
        """The result, or ``JobFailed`` as a worker's job would raise it."""
        return self._outcome(self.record)

    async def aget(self, timeout: float | None = None) -> Any:
        return self._outcome(self.record)


class _EagerRun:
    """The state of one eager job across its attempts; shared by the sync and async paths."""

    def __init__(self, prepared: Prepared) -> None:
        fields = enqueue_fields(prepared.call)
        fields["id"] = prepared.id
        now = int(time.time() * 1000)
        self.queue = prepared.queue
        self.rec = JobRecord.from_hash({
            str(k).encode(): (v if isinstance(v, bytes) else str(v).encode())
            for k, v in {**fields, "status": "started", "attempts": 0, "enqueued_at": now,
                         "worker": EAGER_WORKER, "v": SCHEMA_VERSION}.items()
        })
        self.context = JobContext(self.rec, self.queue, EAGER_WORKER)

    def begin(self) -> None:
        """Start an attempt, as a worker's claim does (before ``job_started`` is sent)."""
        self.rec.attempts += 1
        self.rec.status = "started"
        self.rec.started_at = int(time.time() * 1000)

    def call(self) -> tuple[Callable[..., Any], list[Any], dict[str, Any]]:
        """The function and its decoded arguments (may raise, failing the attempt)."""
        entry = registry.get(self.rec.func)
        args, kwargs = self.rec.call(self.queue.serializer.name)
        return entry.func, args, kwargs

    def succeeded(self, result: Any) -> None:
        try:
            self.rec.result = self.queue.serializer.dumps(result)
        except Exception as exc:
            raise TypeError(
                f"the return value of {self.rec.func} (a {type(result).__name__}) cannot be "
                f"encoded with the {self.queue.serializer.name} serializer: {exc}") from exc
        self.rec.status = "finished"
        self.rec.ended_at = int(time.time() * 1000)

    def failed(self, exc: BaseException) -> bool:
        """Record a failed attempt; True when the retry policy asks for another one."""
        err = describe_exception(exc)
        err["attempt"] = self.rec.attempts
        err["at"] = int(time.time() * 1000)
        json.dumps(err)
        self.rec.errors = [*self.rec.errors, err]
        self.rec.error = err
        self.rec.ended_at = err["at"]
        if (self.rec.retry and not isinstance(exc, (UnknownFunction, PayloadError))
                and retry_delay(self.rec.retry, self.rec.attempts, exc) is not None):
            return True
        self.rec.status = "failed"
        return False

    def handle(self) -> EagerJob:
        return EagerJob(self.queue, self.rec.id, self.rec)


def run_eager(prepared: Prepared) -> EagerJob:
    """Run a prepared job here and now, as a worker would, and return its finished handle."""
    run = _EagerRun(prepared)
    token = set_current(run.context)
    try:
        while True:
            run.begin()
            signals.job_started.send(sender=run.rec.func, job=run.rec)
            try:
                func, args, kwargs = run.call()
                if inspect.iscoroutinefunction(func):
                    result = _run_coroutine(func(*args, **kwargs))
                else:
                    result = _call_sync(func, args, kwargs)
                    if inspect.isawaitable(result):
                        result = _run_coroutine(result)
                run.succeeded(result)
            except KeyboardInterrupt:
                raise  # Ctrl-C in the test run, not the job's error
            except BaseException as exc:  # as a worker: SystemExit too is the job's error
                again = run.failed(exc)
                signals.job_failed.send(sender=run.rec.func, job=run.rec, exc=exc)
                if again:
                    continue
            else:
                signals.job_finished.send(sender=run.rec.func, job=run.rec, result=result)
            return run.handle()
    finally:
        set_current_reset(token)


async def arun_eager(prepared: Prepared) -> EagerJob:
    """``run_eager`` for async callers: ``async def`` jobs are awaited on the caller's loop,
    plain functions run through ``sync_to_async`` (so they may use the ORM)."""
    from asgiref.sync import sync_to_async

    run = _EagerRun(prepared)
    token = set_current(run.context)
    try:
        while True:
            run.begin()
            await signals.job_started.asend(sender=run.rec.func, job=run.rec)
            try:
                func, args, kwargs = run.call()
                if inspect.iscoroutinefunction(func):
                    result = await func(*args, **kwargs)
                else:
                    result = await sync_to_async(func)(*args, **kwargs)
                    if inspect.isawaitable(result):
                        result = await result
                run.succeeded(result)
            except (KeyboardInterrupt, asyncio.CancelledError):
                raise  # Ctrl-C, or the caller's task cancelled: not the job's error
            except BaseException as exc:  # as a worker: SystemExit too is the job's error
                again = run.failed(exc)
                await signals.job_failed.asend(sender=run.rec.func, job=run.rec, exc=exc)
                if again:
                    continue
            else:
                await signals.job_finished.asend(sender=run.rec.func, job=run.rec,
                                                 result=result)
            return run.handle()
    finally:
        set_current_reset(token)


def set_current_reset(token: Any) -> None:
    from .engine.context import _current

    _current.reset(token)


def _call_sync(func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run a plain job function called through ``.delay()``: here, or, when an event loop runs
    in this thread (``.delay()`` from async code), in a helper thread, as a worker runs sync
    jobs in threads: Django refuses sync ORM calls on a thread that runs a loop."""
    if not _loop_running():
        return func(*args, **kwargs)
    from django.db import connections

    def run() -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()  # the helper thread's own connections

    return _in_helper_thread(run)


def _run_coroutine(awaitable: Any) -> Any:
    """Run an ``async def`` job called through the sync ``.delay()``. From async code, with a
    loop running in this thread, which cannot be re-entered, the job gets a loop of its own in
    a helper thread."""
    if not _loop_running():
        return asyncio.run(_await(awaitable))
    return _in_helper_thread(lambda: asyncio.run(_await(awaitable)))


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_helper_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread of its own, with this thread's contextvars (``current_job()``)."""
    import concurrent.futures
    import contextvars

    ctx = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(ctx.run, fn).result()


async def _await(awaitable: Any) -> Any:
    return await awaitable


# -- draining real queues in-process -------------------------------------------------------
@dataclass
class RunResult:
    """What ``run_jobs`` did: how many jobs ended in each outcome, and which ran.

    ``retried`` counts failed attempts that were scheduled for another try; ``failed`` counts
    jobs that failed for good; ``canceled`` counts jobs canceled while running.
    """

    finished: int = 0
    failed: int = 0
    retried: int = 0
    canceled: int = 0
    job_ids: list[str] = field(default_factory=list)
    failed_attempts: int = field(default=0, repr=False)

    def _settle(self, worker: Any) -> RunResult:
        self.failed = worker.failed
        self.retried = max(0, self.failed_attempts - worker.failed)
        self.canceled = max(0, len(self.job_ids) - self.finished - self.failed_attempts)
        return self

    @property
    def total(self) -> int:
        """Attempts run (a retried job counts once per attempt)."""
        return len(self.job_ids)

    def as_dict(self) -> dict[str, int]:
        return {"finished": self.finished, "failed": self.failed, "retried": self.retried,
                "canceled": self.canceled}


def _build(queues: Sequence[str] | None,
           until_empty: bool) -> tuple[Worker, RunResult] | None:
    from .conf import get_queue, queue_names
    from .worker import InProcessHooks, build_worker, caller_thread_executor

    if isinstance(queues, str):
        raise TypeError(f"run_jobs(queues=...) takes a list of queue names, got {queues!r}")
    names = list(queues) if queues is not None else queue_names()
    max_jobs = None
    if not until_empty:
        max_jobs = sum(get_queue(n).count("queued") for n in names)
        if max_jobs == 0:
            return None
    result = RunResult()
    worker = build_worker(names, burst=True, max_jobs=max_jobs, scheduler=False,
                          hooks=InProcessHooks(result), executor=caller_thread_executor,
                          name=f"run_jobs.{time.monotonic_ns()}")
    return worker, result


def run_jobs(queues: Sequence[str] | None = None, *, until_empty: bool = True) -> RunResult:
    """Run the jobs waiting in real queues, in this process, through the real worker engine.

    ``queues`` (default: every configured queue) are served in order, highest priority first.
    With ``until_empty`` (the default) it runs until no job is queued and none runs, so jobs
    that jobs enqueue, released dependents and immediate retries run too; jobs waiting for a
    time (``delay``, retry back-off) run only once due, and are not waited for. With
    ``until_empty=False`` it runs at most the jobs queued when it was called.

    Plain functions run in the calling thread, so they use the caller's database connection
    and see its uncommitted rows (a test's transaction). Call it from sync code; from async
    code use ``arun_jobs``.
    """
    from asgiref.sync import async_to_sync

    built = _build(queues, until_empty)
    if built is None:
        return RunResult()
    worker, result = built
    async_to_sync(worker.run)()
    return result._settle(worker)


async def arun_jobs(queues: Sequence[str] | None = None, *,
                    until_empty: bool = True) -> RunResult:
    """``run_jobs`` for async code (plain functions run in asgiref's sync thread)."""
    from asgiref.sync import sync_to_async

    built = await sync_to_async(_build)(queues, until_empty)
    if built is None:
        return RunResult()
    worker, result = built
    await worker.run()
    return result._settle(worker)


__all__ = ["EagerJob", "RunResult", "arun_eager", "arun_jobs", "run_eager", "run_jobs"]
