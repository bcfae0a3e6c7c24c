"""The job-thread executor: every queued sync job gets a thread of its own.

Threads are woken one at a time (a thread that takes a job while more wait wakes the next), so
these tests check that a round of blocking jobs still runs all at once, whether the threads
have to be spawned or are idle from an earlier round.
"""

from __future__ import annotations

import asyncio
import threading

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
