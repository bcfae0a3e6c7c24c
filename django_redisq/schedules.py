"""Periodic jobs from settings (``REDISQ["CRON"]``) and from ``@job(cron=...)``.

An entry of ``REDISQ["CRON"]``::

    {"cron": "*/5 * * * *", "func": "myapp.tasks.cleanup", "args": [], "kwargs": {},
     "queue": "default", "timezone": "Europe/Paris", "name": "cleanup"}

``every`` (seconds) may replace ``cron`` for sub-minute intervals. ``timezone`` defaults to
``TIME_ZONE``; ``name`` to the function's name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.conf import settings

from .engine.cron import CronError, CronExpr, Schedule, get_timezone
from .engine.registry import registry

ENTRY_KEYS = {"cron", "every", "func", "args", "kwargs", "queue", "timezone", "name"}


def parse_entry(entry: Any, index: int, queues: list[str]) -> Schedule:
    """One ``REDISQ["CRON"]`` entry as a ``Schedule``; raises ``CronError`` naming the problem."""
    where = f'REDISQ["CRON"][{index}]'
    if not isinstance(entry, dict):
        raise CronError(f"{where} must be a dict, got {type(entry).__name__}")
    unknown = set(entry) - ENTRY_KEYS
    if unknown:
        raise CronError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(ENTRY_KEYS))}")
    func = entry.get("func")
    if not isinstance(func, str) or "." not in func:
        raise CronError(f'{where}["func"] must be the dotted name of a @job function')
    queue = entry.get("queue", "default")
    if queue not in queues:
        raise CronError(f'{where}["queue"] {queue!r} is not a configured queue '
                        f"({', '.join(queues)})")
    try:
        cron = CronExpr.parse(entry["cron"]) if "cron" in entry else None
    except CronError as exc:
        raise CronError(f'{where}["cron"]: {exc}') from None
    args = entry.get("args", [])
    kwargs = entry.get("kwargs", {})
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise CronError(f'{where}: "args" must be a list and "kwargs" a dict')
    try:
        return Schedule(
            name=str(entry.get("name") or func), func=func, queue=queue, cron=cron,
            every=entry.get("every"), args=tuple(args), kwargs=dict(kwargs),
            tz=get_timezone(entry.get("timezone") or settings.TIME_ZONE),
        )
    except CronError as exc:
        raise CronError(f"{where}: {exc}") from None


def load_schedules() -> list[Schedule]:
    """Every periodic job: settings entries, then ``@job(cron=...)`` functions registered so
    far (workers call this after importing the projects' job modules)."""
    from .conf import queue_names, redisq_settings

    names = queue_names()
    out = [parse_entry(e, i, names) for i, e in enumerate(redisq_settings().cron)]
    for name in registry.names():
        jf = registry.get(name).options.get("job")
        expr = getattr(jf, "options", {}).get("cron")
        if expr and jf is not None:
            out.append(Schedule(name=name, func=name, queue=jf.queue_name,
                                cron=CronExpr.parse(expr), tz=get_timezone(settings.TIME_ZONE)))
    # Periodic jobs keep the limits their function declares (its key function runs when the
    # scheduler enqueues a tick).
    return [replace(s, limits=registry.get(s.func).options.get("limits"))
            if s.func in registry else s for s in out]
