"""Job bodies shared by every system in the benchmark (importable by name, e.g. for rq).

Each body is the same work everywhere: nothing (no-op), a 10 ms sleep, or echoing its
argument back (so a result is stored for the latency scenario). Systems that pass a context
first (arq, saq) get their own thin variants. ``count()`` tells how many bodies ran in this
process, so a worker can check that it ran every job it was given.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

_hits: list[None] = []  # list.append is atomic under the GIL, so job threads may share it


def _hit() -> None:
    _hits.append(None)


# -- plain bodies (django-redisq, rq, dramatiq, huey, streaq sync) -------------------------
def noop() -> None:
    _hit()


async def anoop() -> None:
    _hit()


def sleep10() -> None:
    time.sleep(0.01)
    _hit()


async def asleep10() -> None:
    await asyncio.sleep(0.01)
    _hit()


def echo(x: Any) -> Any:
    _hit()
    return x


async def aecho(x: Any) -> Any:
    _hit()
    return x


# -- context-first bodies (arq, saq) --------------------------------------------------------
async def ctx_noop(ctx: Any) -> None:
    _hit()


async def ctx_sleep10(ctx: Any) -> None:
    await asyncio.sleep(0.01)
    _hit()


async def ctx_echo(ctx: Any, x: Any = None) -> Any:
    _hit()
    return x


def count() -> int:
    """Bodies run in this process (for the end-of-run check)."""
    return len(_hits)
