"""Periodic jobs: one leader enqueues each tick, exactly once, however many workers run.

Leadership is a lease in Redis, renewed at every heartbeat and taken over by another scheduler
when its holder dies. Exactly-once does not rest on the lease alone: the enqueue script records
each schedule's last tick and refuses the same or an older one, atomically. So two schedulers
that briefly both think they lead still enqueue a tick once. A tick missed while no scheduler
ran is not replayed N times: the schedule runs once, for the latest missed tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timezone

from .cron import Schedule
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
            except Exception as exc:  # Redis down, bad schedule: log, keep the loop alive
                log.error("scheduler %s: %s", self.name, exc)
            timeout = self.heartbeat
            if self.leading and self.schedules:
                now = datetime.now(timezone.utc)
                soonest = min(s.next_due(now) for s in self.schedules)
                timeout = min(timeout, max(0.0, (soonest - now).total_seconds()) + 0.001)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(closed.wait(), timeout)

    async def tick(self, now: datetime) -> None:
        """Enqueue every schedule that has a tick due since its last recorded one."""
        for s in self.schedules:
            queue = self.queues[s.queue]
            raw = await queue.arun(one(Cmd(("GET", queue.keys.cron_last(s.name)))))
            since = (datetime.fromtimestamp(int(raw) / 1000, tz=timezone.utc)
                     if raw is not None else None)
            due = s.last_due(now, since)
            if due is None:
                continue
            tick_ms = int(due.timestamp() * 1000)
            prepared = queue.prepare(s.func, s.args, s.kwargs,
                                     job_id=f"cron:{s.name}:{tick_ms}", once=(s.name, tick_ms),
                                     limits=s.limits)
            try:
                created = await queue.asend_once(prepared)
            except NotReplicated as exc:
                # On the master, not confirmed by its replicas (``enqueued`` counts confirmed
                # ticks only). Should a failover lose the tick, its record goes with it, and
                # the next leader enqueues it again.
                log.warning("schedule %s: %s", s.name, exc)
                continue
            if created:
                self.enqueued += 1
                log.info("schedule %s: enqueued %s for %s", s.name, s.func, due.isoformat())
