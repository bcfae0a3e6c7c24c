"""Periodic jobs: one leader enqueues each tick, exactly once, however many workers run.

Leadership is a lease in Redis, renewed at every heartbeat and taken over by another scheduler
when its holder dies. Exactly-once does not rest on the lease alone: the enqueue script records
each schedule's last tick and refuses the same or an older one, atomically. So two schedulers
that briefly both think they lead still enqueue a tick once. A tick missed while no scheduler
ran is not replayed N times: the schedule runs once, for the latest missed tick.

One schedule's trouble is its own: a schedule whose times cannot be computed is dropped (with
an error naming it), and a tick that cannot be prepared or sent is logged under its schedule's
name; the other schedules, and the worker, go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timezone

from .cron import CronError, Schedule
from .errors import NotReplicated
from .keys import cron_leader_key
from .ops import Call, Cmd, one
from .queue import Queue
from .scripts import LEAD_SCRIPT

log = logging.getLogger("django_redisq.scheduler")


class CronScheduler:
    def __init__(self, schedules: Sequence[Schedule], queues: dict[str, Queue], name: str,
                 heartbeat: float) -> None:
        self.schedules = list(schedules)
        self.queues = queues
        self.name = name
        self.heartbeat = heartbeat
        self.lease_ms = int(max(heartbeat * 3, 1.0) * 1000)
        self.leading = False
        self.enqueued = 0
        #: Schedule name -> the tick (ms) that could not be prepared, logged once.
        self._unpreparable: dict[str, int] = {}

    async def run(self, closed: asyncio.Event) -> None:
        any_queue = next(iter(self.queues.values()))
        leader_key = cron_leader_key(any_queue.prefix)
        while not closed.is_set():
            try:
                lead = await any_queue.arun(one(Call(LEAD_SCRIPT, [leader_key],
                                                     [self.name, self.lease_ms])))
                if bool(lead) != self.leading:
                    log.info("scheduler %s %s cron leadership", self.name,
                             "took" if lead else "lost")
                self.leading = bool(lead)
                if self.leading:
                    await self.tick(datetime.now(timezone.utc))
            except Exception as exc:  # Redis down: log, keep the loop alive
                log.error("scheduler %s: %s", self.name, exc)
            await self._sleep(closed, self.wait_seconds(datetime.now(timezone.utc)))

    async def _sleep(self, closed: asyncio.Event, seconds: float) -> None:
        """Wait ``seconds``, or until ``closed`` is set."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(closed.wait(), seconds)

    def wait_seconds(self, now: datetime) -> float:
        """How long the loop sleeps: until the soonest tick (a millisecond past it), at most a
        heartbeat (which renews the lease). ``next_due`` is always after ``now``, so the loop
        never spins, even in a repeated hour of a daylight-saving change."""
        timeout = self.heartbeat
        if self.leading and self.schedules:
            due = [d for d in (self._next_due(s, now) for s in list(self.schedules))
                   if d is not None]
            if due:
                timeout = min(timeout, max(0.0, (min(due) - now).total_seconds()) + 0.001)
        return timeout

    def _next_due(self, s: Schedule, now: datetime) -> datetime | None:
        try:
            return s.next_due(now)
        except Exception as exc:  # CronError, or a bug: one schedule must not stop the loop
            self._drop(s, exc)
            return None

    def _drop(self, s: Schedule, exc: Exception) -> None:
        """Stop running a schedule whose times cannot be computed (it would fail the same way
        at every turn); the others go on. ``manage.py check`` and ``@job`` reject such
        expressions, so this is a last resort."""
        log.error("scheduler %s: schedule %s dropped until the worker restarts: %s",
                  self.name, s.name, exc)
        self.schedules = [x for x in self.schedules if x is not s]

    async def tick(self, now: datetime) -> None:
        """Enqueue every schedule that has a tick due since its last recorded one. A failure
        is logged under its schedule's name and does not stop the schedules after it."""
        for s in list(self.schedules):
            try:
                await self._tick_one(s, now)
            except CronError as exc:
                self._drop(s, exc)
            except Exception as exc:  # Redis of that queue down, ...: the next turn retries
                log.error("scheduler %s: schedule %s: %s", self.name, s.name, exc)

    async def _tick_one(self, s: Schedule, now: datetime) -> None:
        queue = self.queues[s.queue]
        raw = await queue.arun(one(Cmd(("GET", queue.keys.cron_last(s.name)))))
        since = (datetime.fromtimestamp(int(raw) / 1000, tz=timezone.utc)
                 if raw is not None else None)
        due = s.last_due(now, since)
        if due is None:
            return
        tick_ms = int(due.timestamp() * 1000)
        if self._unpreparable.get(s.name) == tick_ms:
            return  # logged once already; the next tick tries again
        try:
            prepared = queue.prepare(s.func, s.args, s.kwargs, job_id=f"cron:{s.name}:{tick_ms}",
                                     once=(s.name, tick_ms), limits=s.limits, **s.options)
        except (TypeError, ValueError) as exc:
            # The arguments or options are wrong (not serialisable, a limit_key function that
            # returns no str, ...): the same tick would fail the same way at every turn, so it
            # is logged once and skipped; the schedule's next tick is tried again.
            self._unpreparable[s.name] = tick_ms
            log.error("scheduler %s: schedule %s: cannot enqueue %s for %s: %s", self.name,
                      s.name, s.func, due.isoformat(), exc)
            return
        self._unpreparable.pop(s.name, None)
        try:
            created = await queue.asend_once(prepared)
        except NotReplicated as exc:
            # On the master, not confirmed by its replicas (``enqueued`` counts confirmed
            # ticks only). Should a failover lose the tick, its record goes with it, and
            # the next leader enqueues it again.
            log.warning("schedule %s: %s", s.name, exc)
            return
        if created:
            self.enqueued += 1
            log.info("schedule %s: enqueued %s for %s", s.name, s.func, due.isoformat())
