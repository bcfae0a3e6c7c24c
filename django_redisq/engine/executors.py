"""How a job body runs: ``async def`` jobs as tasks on the worker's loop, plain functions in a
thread pool. Both are bounded by the job's timeout; both run inside the job's context (a copy
of the contextvars, so ``current_job()`` works in either).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .errors import JobTimeout

_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+


class Executor:
    """Runs job bodies. ``on_thread_done`` is told when a sync job's thread really ends, which,
    after a timeout, can be later than the job's own end: the slot stays taken until then."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="redisq-job")

    async def run_async(self, coro_fn: Callable[[], Any], timeout: float | None) -> Any:
        # asyncio.timeout (3.11+) runs the job in the worker's own task; wait_for would wrap it
        # in a second task per job.
        if _timeout is None:
            try:
                return await asyncio.wait_for(coro_fn(), timeout)
            except asyncio.TimeoutError:
                raise JobTimeout(f"the job ran longer than its timeout of {timeout:g} s") from None
        try:
            async with _timeout(timeout):
                return await coro_fn()
        except TimeoutError:
            raise JobTimeout(f"the job ran longer than its timeout of {timeout:g} s") from None

    async def run_sync(self, fn: Callable[[], Any], timeout: float | None,
                       on_thread_done: Callable[[], None]) -> Any:
        """Run ``fn`` in a pool thread. Past the timeout, raise ``JobTimeout``; the thread
        cannot be stopped, so ``on_thread_done`` fires only when it returns."""
        ctx = contextvars.copy_context()
        cfut: Future[Any] = self._pool.submit(ctx.run, fn)
        cfut.add_done_callback(lambda _f: on_thread_done())
        fut = asyncio.wrap_future(cfut)
        try:
            done, _ = await asyncio.wait({fut}, timeout=timeout)
        except asyncio.CancelledError:
            cfut.cancel()
            raise
        if not done:
            raise JobTimeout(
                f"the job ran longer than its timeout of {timeout:g} s (its thread cannot be "
                f"stopped and keeps its worker slot until it returns; use --processes for jobs "
                f"that must be killed)"
            )
        return fut.result()

    def shutdown(self, wait: bool) -> None:
        """Stop the pool; ``wait=False`` when a timed-out job still holds a thread."""
        self._pool.shutdown(wait=wait, cancel_futures=True)


def stuck_job_threads() -> int:
    """Job threads still running (a sync job past its timeout); they keep a process alive."""
    import threading

    return sum(1 for t in threading.enumerate()
               if t.name.startswith("redisq-job") and t.is_alive())
