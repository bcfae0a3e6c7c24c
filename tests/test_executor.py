"""The job-thread executor: every queued sync job gets a thread of its own.

Threads are woken one at a time (a thread that takes a job while more wait wakes the next), so
these tests check that a round of blocking jobs still runs all at once, whether the threads
have to be spawned or are idle from an earlier round.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from django_redisq.engine.errors import JobTimeout
from django_redisq.engine.executors import Executor


def test_blocking_sync_jobs_each_get_a_thread_spawned_or_idle():
    size = 6

    async def round_of_blocking_jobs(ex: Executor) -> list[str]:
        # Each job waits until all of them run at once; a job left without a thread would
        # break the barrier (BrokenBarrierError after the timeout) instead of passing it.
        barrier = threading.Barrier(size, timeout=10)

        def body() -> str:
            barrier.wait()
            return threading.current_thread().name

        return await asyncio.gather(*(ex.run_sync(body, None, lambda: None)
                                      for _ in range(size)))

    async def main() -> None:
        ex = Executor(size)
        try:
            first = await round_of_blocking_jobs(ex)   # threads spawned on demand
            second = await round_of_blocking_jobs(ex)  # the same threads, woken from idle
        finally:
            ex.shutdown(wait=True)
        assert len(set(first)) == size
        assert set(second) == set(first)

    asyncio.run(main())


def test_a_job_queued_while_every_thread_is_busy_runs_when_one_frees():
    async def main() -> None:
        ex = Executor(1)
        running, gate = threading.Event(), threading.Event()

        def block() -> bool:
            running.set()
            return gate.wait(10)

        try:
            blocked = asyncio.ensure_future(ex.run_sync(block, None, lambda: None))
            queued = asyncio.ensure_future(ex.run_sync(lambda: "ran", None, lambda: None))
            # Once the only thread runs the first job, the second waits in the queue.
            assert await asyncio.to_thread(running.wait, 10)
            assert not queued.done()
            gate.set()
            assert await asyncio.wait_for(queued, 10) == "ran"
            assert await blocked is True
        finally:
            ex.shutdown(wait=True)

    asyncio.run(main())


# -- timeouts: one loop timer for every running job (Deadlines) ---------------------------------
def test_async_jobs_past_their_timeouts_fail_and_the_others_finish():
    """Jobs of two timeouts run at once: a short-timeout job started after long-timeout ones
    still times out on time (the shared timer moves earlier for it), jobs that end in time
    return their results, and no deadline is left behind."""

    async def main() -> None:
        ex = Executor(1)
        never = asyncio.Event()

        async def hang() -> None:
            await never.wait()

        async def quick(value: int) -> int:
            return value

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        long_hang = asyncio.ensure_future(ex.run_async(hang, 30))
        results = await asyncio.gather(
            ex.run_async(hang, 0.2),
            *(ex.run_async(lambda i=i: quick(i), 30) for i in range(5)),
            ex.run_async(hang, 0.3),
            return_exceptions=True,
        )
        took = loop.time() - t0
        assert isinstance(results[0], JobTimeout)
        assert "timeout of 0.2 s" in str(results[0])
        assert results[1:6] == [0, 1, 2, 3, 4]
        assert isinstance(results[6], JobTimeout)
        assert 0.29 <= took < 10  # the 0.3 s job ran its whole timeout, not the 30 s one's
        assert not long_hang.done()
        long_hang.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long_hang
        assert len(ex._deadlines()) == 0

    asyncio.run(main())


def test_a_job_cancelled_otherwise_is_cancelled_not_timed_out():
    """A cancel (a cancel request, a shutdown) while the deadline is pending surfaces as
    CancelledError, as before; so does one that comes with the timeout (Python 3.11+)."""

    async def main() -> None:
        ex = Executor(1)
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.ensure_future(ex.run_async(hang, 30))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(ex._deadlines()) == 0

        if sys.version_info >= (3, 11):
            started.clear()
            both = asyncio.ensure_future(ex.run_async(hang, 0.05))
            await started.wait()
            # Cancel it from the deadline's own callback turn: cancelled twice, once by the
            # timeout, once by us.
            entry = next(iter(next(iter(ex._deadlines()._by_timeout.values()))))
            expire = entry.expire

            def expire_and_cancel() -> None:
                expire()
                both.cancel()

            entry.expire = expire_and_cancel
            with pytest.raises(asyncio.CancelledError):
                await both

    asyncio.run(main())


def test_a_job_that_swallows_the_timeouts_cancellation_keeps_its_result():
    async def main() -> None:
        ex = Executor(1)

        async def stubborn() -> str:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return "kept"
            return "unreachable"

        assert await ex.run_async(stubborn, 0.05) == "kept"
        task = asyncio.current_task()
        assert task is not None
        if sys.version_info >= (3, 11):
            assert task.cancelling() == 0  # the timeout's cancel was withdrawn

    asyncio.run(main())


def test_a_sync_job_past_its_timeout_fails_while_its_thread_runs_on():
    async def main() -> None:
        ex = Executor(2)
        gate = threading.Event()
        thread_done = asyncio.Event()
        try:
            with pytest.raises(JobTimeout, match=r"timeout of 0\.1 s"):
                await ex.run_sync(lambda: gate.wait(10), 0.1, thread_done.set)
            assert not thread_done.is_set()  # the thread still holds its slot
            assert await ex.run_sync(lambda: "next", 30, lambda: None) == "next"
            assert len(ex._deadlines()) == 0
        finally:
            gate.set()
            await asyncio.wait_for(thread_done.wait(), 10)
            ex.shutdown(wait=True)

    asyncio.run(main())


def test_one_timer_serves_many_running_jobs():
    """Arming a job's deadline adds no loop timer while an earlier one is armed: the loop's
    timer heap does not grow with the jobs (it held a cancelled handle per job before)."""

    async def main() -> None:
        ex = Executor(1)
        loop = asyncio.get_running_loop()
        release, all_in = asyncio.Event(), asyncio.Event()
        count, target = 0, 1

        async def wait_release() -> None:
            nonlocal count
            count += 1  # its deadline is armed: run_async added it before calling this
            if count == target:
                all_in.set()
            await release.wait()

        first = asyncio.ensure_future(ex.run_async(wait_release, 30))
        await all_in.wait()
        scheduled = len(loop._scheduled)  # type: ignore[attr-defined]
        all_in.clear()
        target = 201
        others = [asyncio.ensure_future(ex.run_async(wait_release, 30)) for _ in range(200)]
        await all_in.wait()
        assert len(loop._scheduled) == scheduled  # type: ignore[attr-defined]
        assert len(ex._deadlines()) == 201
        release.set()
        await asyncio.gather(first, *others)
        assert len(ex._deadlines()) == 0

    asyncio.run(main())


def test_a_sync_job_sent_to_a_shut_down_executor_is_refused_and_leaves_no_deadline():
    async def main() -> None:
        ex = Executor(1)
        ex.shutdown(wait=True)
        with pytest.raises(RuntimeError, match="shut down"):
            await ex.run_sync(lambda: None, 30, lambda: None)
        assert len(ex._deadlines()) == 0

    asyncio.run(main())
