"""How a job body runs: ``async def`` jobs as tasks on the worker's loop, plain functions in a
thread pool. Both are bounded by the job's timeout; both run inside the job's context (a copy
of the contextvars, so ``current_job()`` works in either).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import math
import threading
from collections.abc import Callable
from typing import Any

from .errors import JobTimeout


class _Deadline:
    __slots__ = ("at", "expire", "fired", "timeout")

    def __init__(self, at: float, timeout: float, expire: Callable[[], Any]) -> None:
        self.at = at
        self.timeout = timeout
        self.expire = expire
        self.fired = False


class Deadlines:
    """The timeouts of the jobs running on one loop, behind a single loop timer.

    A timer per job (``asyncio.timeout``, ``call_later``) costs a job 3 to 10 us to arm and
    cancel, and fills the loop's timer heap with cancelled handles, although almost no job
    times out. Jobs of one timeout reach their deadlines in the order they started, so each
    timeout keeps its jobs in a dict in start order: adding and removing a job is a dict
    operation, the earliest deadline is the first entry of one of the dicts, and one timer
    waits for it. When that job ends first, the timer is not moved: it fires, finds nothing
    due and waits for the next deadline, about once per timeout.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._by_timeout: dict[float, dict[_Deadline, None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def add(self, timeout: float, expire: Callable[[], Any]) -> _Deadline:
        """Call ``expire()`` on the loop ``timeout`` seconds from now, unless ``discard``."""
        entry = _Deadline(self.loop.time() + timeout, timeout, expire)
        group = self._by_timeout.get(timeout)
        if group is None:
            group = self._by_timeout[timeout] = {}
        group[entry] = None
        if entry.at < self._timer_at:
            self._arm(entry.at)
        return entry

    def discard(self, entry: _Deadline) -> None:
        """Forget a deadline (no-op once it fired)."""
        group = self._by_timeout.get(entry.timeout)
        if group is not None and entry in group:
            del group[entry]
            if not group:
                del self._by_timeout[entry.timeout]

    def __len__(self) -> int:
        return sum(map(len, self._by_timeout.values()))

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(at, self._fire)
        self._timer_at = at

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self.loop.time()
        due: list[_Deadline] = []
        following = math.inf
        for timeout, group in list(self._by_timeout.items()):
            first = len(due)
            for entry in group:
                if entry.at > now:
                    following = min(following, entry.at)
                    break
                due.append(entry)
            for entry in due[first:]:
                del group[entry]
            if not group:
                del self._by_timeout[timeout]
        if following < math.inf:
            self._arm(following)
        for entry in due:
            entry.fired = True
            entry.expire()


class _ThreadJob:
    __slots__ = ("ctx", "error", "fn", "future", "on_thread_done", "result", "timeout")

    def __init__(self, fn: Callable[[], Any], future: asyncio.Future[Any],
                 on_thread_done: Callable[[], None]) -> None:
        self.fn = fn
        self.future = future
        self.on_thread_done = on_thread_done
        self.ctx = contextvars.copy_context()
        self.result: Any = None
        self.error: BaseException | None = None
        self.timeout = 0.0

    def expire(self) -> None:
        """The timeout passed: the job's awaiter gets JobTimeout (its thread runs on)."""
        if not self.future.done():
            self.future.set_exception(JobTimeout(
                f"the job ran longer than its timeout of {self.timeout:g} s (its thread cannot "
                f"be stopped and keeps its worker slot until it returns; use --processes for "
                f"jobs that must be killed)"))


class Executor:
    """Runs job bodies. ``on_thread_done`` is told, on the loop, when a sync job's thread
    really ends, which, after a timeout, can be later than the job's own end: the slot stays
    taken until then.

    Sync jobs run on ``threads`` long-lived threads fed from one deque. The cost per job is
    what a fast job pays: finished jobs reach the loop in batches (one loop wake-up for all
    the jobs that finished since the last one), a thread that finishes a job picks the next
    one without sleeping, and threads are woken one at a time: at most one is on its way to
    the queue, and a thread that takes a job while more wait wakes the next (spawning it,
    up to ``threads``). Every queued job still gets a thread of its own soon, one wake-up
    after the one before, so blocking jobs keep their concurrency; a burst of short jobs is
    taken by the threads already awake instead of waking every idle thread at once, each
    wake-up of which costs a cross-CPU hand-over of the GIL.
    """

    #: The deadlines of this executor's jobs (on the loop of the last job).
    _timeouts: Deadlines | None = None

    def __init__(self, threads: int) -> None:
        self._size = threads
        self._threads: list[threading.Thread] = []
        self._todo: collections.deque[_ThreadJob] = collections.deque()
        self._done: collections.deque[_ThreadJob] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        #: Threads waiting in ``_cond`` and not yet notified (so, under the lock, the number of
        #: its waiters).
        self._idle = 0
        #: Threads notified or spawned that have not reached the queue yet.
        self._waking = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup_pending = False

    def _deadlines(self) -> Deadlines:
        loop = asyncio.get_running_loop()
        deadlines = self._timeouts
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self._timeouts = Deadlines(loop)
        return deadlines

    async def run_async(self, coro_fn: Callable[[], Any], timeout: float | None) -> Any:
        """Await ``coro_fn()`` in the calling task; past the timeout, cancel it and raise
        ``JobTimeout`` (``CancelledError`` when the task was also cancelled otherwise: a
        cancel request or a shutdown)."""
        if timeout is None:
            return await coro_fn()
        task = asyncio.current_task()
        assert task is not None
        deadlines = self._deadlines()
        deadline = deadlines.add(timeout, task.cancel)
        withdrawn = False
        try:
            return await coro_fn()
        except asyncio.CancelledError:
            if deadline.fired:
                withdrawn = True
                if _uncancel(task) == 0:
                    raise JobTimeout(
                        f"the job ran longer than its timeout of {timeout:g} s") from None
            raise
        finally:
            deadlines.discard(deadline)
            # A job that swallowed the timeout's CancelledError (its result or error stands)
            # still has the timeout's cancel withdrawn.
            if deadline.fired and not withdrawn:
                _uncancel(task)

    async def run_sync(self, fn: Callable[[], Any], timeout: float | None,
                       on_thread_done: Callable[[], None]) -> Any:
        """Run ``fn`` in a job thread. Past the timeout, raise ``JobTimeout``; the thread
        cannot be stopped, so ``on_thread_done`` fires only when it returns."""
        loop = self._loop = asyncio.get_running_loop()
        job = _ThreadJob(fn, loop.create_future(), on_thread_done)
        with self._cond:
            if self._closed:
                raise RuntimeError("the executor is shut down")
            self._todo.append(job)
            if not self._waking:
                self._wake_one()
        if timeout is None:
            return await job.future
        job.timeout = timeout
        deadlines = self._deadlines()
        deadline = deadlines.add(timeout, job.expire)
        try:
            return await job.future
        finally:
            deadlines.discard(deadline)

    def _wake_one(self) -> None:
        """Under the lock: send one more thread to the queue, an idle one or a new one (none
        when every thread is busy: the first to finish takes the next job)."""
        if self._idle:
            self._idle -= 1
            self._waking += 1
            self._cond.notify()
        elif len(self._threads) < self._size:
            self._waking += 1
            self._spawn()

    def _spawn(self) -> None:
        t = threading.Thread(target=self._thread_main, daemon=True,
                             name=f"redisq-job-{len(self._threads)}")
        self._threads.append(t)
        t.start()

    def _thread_main(self) -> None:
        cond, todo = self._cond, self._todo
        with cond:
            self._waking -= 1  # spawned by _wake_one
        while True:
            with cond:
                while not todo:
                    if self._closed:
                        return
                    self._idle += 1
                    cond.wait()
                    self._waking -= 1  # notified by _wake_one (or by shutdown)
                job = todo.popleft()
                if todo and not self._waking:
                    self._wake_one()
            if job.future.cancelled():
                job.error = asyncio.CancelledError()
            else:
                try:
                    job.result = job.ctx.run(job.fn)
                except BaseException as exc:
                    job.error = exc
            self._done.append(job)
            # One loop wake-up for every job that finishes before the loop drains them. The
            # flag is read after the append and cleared before the drain, so no job is missed.
            if not self._wakeup_pending:
                self._wakeup_pending = True
                assert self._loop is not None
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: nobody waits for the outcome
                    return

    def _deliver(self) -> None:
        self._wakeup_pending = False
        done = self._done
        while done:
            job = done.popleft()
            fut = job.future
            if not fut.done():
                if job.error is not None:
                    fut.set_exception(job.error)
                else:
                    fut.set_result(job.result)
            job.on_thread_done()

    def shutdown(self, wait: bool) -> None:
        """Stop the threads; ``wait=False`` when a timed-out job still holds a thread."""
        with self._cond:
            self._closed = True
            for job in self._todo:
                job.future.cancel()
            self._todo.clear()
            self._cond.notify_all()
        if wait:
            for t in self._threads:
                t.join()


def _uncancel(task: asyncio.Task[Any]) -> int:
    """Withdraw one cancellation request from ``task`` (the timeout's own); the number left.
    Python 3.10 does not count them: 0."""
    uncancel = getattr(task, "uncancel", None)
    return uncancel() if uncancel is not None else 0  # type: ignore[no-any-return]


def stuck_job_threads() -> int:
    """Job threads still running (a sync job past its timeout); they keep a process alive."""
    return sum(1 for t in threading.enumerate()
               if t.name.startswith("redisq-job") and t.is_alive())
