"""The worker's event loop (engine/eventloop.py): waits end on readiness, never before their
timeout, and coroutines run on it as with ``asyncio.run``. How much closer to its deadline a
timer fires is a benchmark figure (bench S1), not asserted here."""

from __future__ import annotations

import asyncio
import socket
import sys
import time

import pytest

from django_redisq.engine import eventloop

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="epoll is Linux only")


@pytest.fixture
def selector():
    sel = eventloop.PreciseEpollSelector()
    a, b = socket.socketpair()
    sel.register(a, eventloop.selectors.EVENT_READ)
    try:
        yield sel, a, b
    finally:
        sel.close()
        a.close()
        b.close()


def test_a_wait_with_nothing_ready_lasts_its_whole_sub_millisecond_timeout(selector):
    sel, _a, _b = selector
    for timeout in (0.0004, 0.0013, 0.0021):
        started = time.perf_counter()
        assert sel.select(timeout) == []
        assert time.perf_counter() - started >= timeout


def test_a_wait_ends_with_the_events_once_a_descriptor_is_ready(selector):
    sel, a, b = selector
    b.send(b"x")
    started = time.perf_counter()
    ready = sel.select(5.0005)
    assert [(key.fileobj, events) for key, events in ready] == [(a, eventloop.selectors.EVENT_READ)]
    assert time.perf_counter() - started < 5  # on readiness, not at the timeout
    assert sel.select(0) == [(ready[0][0], eventloop.selectors.EVENT_READ)]  # still unread


def test_run_runs_a_coroutine_on_the_precise_loop():
    async def main() -> tuple[str, float]:
        started = time.perf_counter()
        await asyncio.sleep(0.0015)
        loop = asyncio.get_running_loop()
        return type(loop._selector).__name__, time.perf_counter() - started  # type: ignore[attr-defined]

    selector_name, slept = eventloop.run(main())
    if sys.version_info >= (3, 11):
        assert selector_name == "PreciseEpollSelector"
    assert slept >= 0.0015
