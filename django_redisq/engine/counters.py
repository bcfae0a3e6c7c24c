"""Cumulative job counters and time histograms, kept in Redis so they are cluster-wide.

A worker counts each ended attempt in memory (``JobCounters.record``: a few dict updates) and
adds the counts to the queue's stats hash (``redisq:{queue}:stats``) with the outcomes it
writes anyway, in the same pipeline: no extra round trip per job, one ``HINCRBY`` script per
queue per batch. Recovery (a dead worker's job put back) is counted by the maintenance script.

One hash per queue, whose fields are bounded by the number of registered functions times the
buckets (``func`` is the registered name, never a job id or argument), so memory stays
bounded. Fields:

* ``o|<outcome>|<func>``: attempts that ended so (``OUTCOMES``);
* ``w|<i>|<func>`` / ``r|<i>|<func>``: attempts whose wait (enqueued or due, to started) /
  run time fell in bucket ``i`` (``BUCKETS[i-1] < t <= BUCKETS[i]``; ``i == len(BUCKETS)``
  is ``+Inf``), not cumulative;
* ``ws|<func>`` / ``rs|<func>``: sums of those times, in microseconds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Upper bounds (seconds) of the histogram buckets; ``+Inf`` is implied.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                              30.0, 60.0, 300.0, 900.0, 3600.0)
#: How an attempt ends. ``timed_out``: it hit its timeout (retried or not); ``retried``: it
#: raised and runs again; ``failed``: it raised (or its worker died too often) and will not
#: run again; ``recovered``: its worker died and it was put back on its queue.
OUTCOMES = ("finished", "failed", "retried", "timed_out", "canceled", "recovered")
#: The function label of jobs naming no registered function (keeps label values bounded).
UNREGISTERED = "<unregistered>"


class JobCounters:
    """Counts not yet written to Redis, per queue. Used on the worker's event loop only."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, int]] = {}

    def record(self, queue: str, func: str, outcome: str, wait: float | None,
               run: float | None) -> None:
        d = self._pending.get(queue)
        if d is None:
            d = self._pending[queue] = {}
        key = f"o|{outcome}|{func}"
        d[key] = d.get(key, 0) + 1
        if wait is not None:
            _observe(d, "w", func, wait)
        if run is not None:
            _observe(d, "r", func, run)

    def take(self, queue: str) -> list[Any] | None:
        """The pending counts of ``queue`` as ``[field, n, ...]``, forgotten here."""
        d = self._pending.pop(queue, None)
        if not d:
            return None
        flat: list[Any] = []
        for k, v in d.items():
            flat += [k, v]
        return flat

    def restore(self, queue: str, flat: list[Any]) -> None:
        """Put back counts whose write failed (they go with the next batch)."""
        d = self._pending.setdefault(queue, {})
        for k, v in zip(flat[::2], flat[1::2]):
            d[k] = d.get(k, 0) + int(v)


def _observe(d: dict[str, int], kind: str, func: str, seconds: float) -> None:
    seconds = max(0.0, seconds)
    key = f"{kind}|{bisect_left(BUCKETS, seconds)}|{func}"
    d[key] = d.get(key, 0) + 1
    key = f"{kind}s|{func}"
    d[key] = d.get(key, 0) + int(seconds * 1_000_000)


@dataclass
class Histogram:
    """One function's times: per-bucket (not cumulative) counts and the sum in seconds."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        out, total = [], 0
        for bound, n in zip((*(f"{b:g}" for b in BUCKETS), "+Inf"), self.counts):
            total += n
            out.append((bound, total))
        return out


@dataclass
class FunctionStats:
    outcomes: dict[str, int] = field(default_factory=dict)
    wait: Histogram = field(default_factory=Histogram)
    run: Histogram = field(default_factory=Histogram)


def parse_stats(raw: Mapping[Any, Any]) -> dict[str, FunctionStats]:
    """Decode a stats hash (HGETALL reply) into per-function stats; unknown fields are
    skipped, so a newer worker's extra fields do not break an older reader."""
    out: dict[str, FunctionStats] = {}
    for k, v in raw.items():
        key = k.decode(errors="replace") if isinstance(k, bytes) else str(k)
        try:
            n = int(v)
        except (TypeError, ValueError):
            continue
        kind, _, rest = key.partition("|")
        if kind in ("ws", "rs"):
            fs = out.setdefault(rest, FunctionStats())
            (fs.wait if kind == "ws" else fs.run).sum += n / 1_000_000
            continue
        sub, _, func = rest.partition("|")
        if kind == "o" and sub in OUTCOMES:
            fs = out.setdefault(func, FunctionStats())
            fs.outcomes[sub] = fs.outcomes.get(sub, 0) + n
        elif kind in ("w", "r") and sub.isdigit() and int(sub) <= len(BUCKETS):
            fs = out.setdefault(func, FunctionStats())
            (fs.wait if kind == "w" else fs.run).counts[int(sub)] += n
    return out
