"""The worker's event loop: asyncio's own, with timers accurate to well under a millisecond.

Linux's ``epoll_wait`` takes its timeout in whole milliseconds and Python rounds it up, so a
timer due in 0.3 ms fires about 1 ms late. When concurrent jobs hold timers a little apart
(``asyncio.sleep``, timeouts), each of them fires late in turn: ten async jobs sleeping 10 ms
ran at about 830 jobs/s in one worker, where a bare asyncio loop manages 970 (bench S1). The
selector here waits with ``select()`` on the epoll descriptor, whose timeout has microsecond
resolution, then reads the ready events without blocking. Elsewhere (no epoll) the loop is
asyncio's default.
"""

from __future__ import annotations

import asyncio
import select
import selectors
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: ``select()`` only takes descriptors below this (FD_SETSIZE); the epoll descriptor is made
#: when the loop starts, so it is almost always far below.
_FD_SETSIZE = 1024

if sys.platform == "linux":

    class PreciseEpollSelector(selectors.EpollSelector):
        """``EpollSelector`` whose waits end on time rather than up to 1 ms later."""

        def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey,
                                                                      int]]:
            if timeout is not None and timeout > 0 and (timeout * 1000) % 1:
                fd = self.fileno()
                if fd < _FD_SETSIZE:
                    select.select([fd], [], [], timeout)  # returns early once events are ready
                    timeout = 0
            return super().select(timeout)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An event loop with precise timers where epoll exists, else asyncio's default."""
    if sys.platform == "linux":
        return asyncio.SelectorEventLoop(PreciseEpollSelector())
    return asyncio.new_event_loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on a loop from ``new_event_loop()`` (Python 3.11+; on 3.10, on
    asyncio's default loop)."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)
