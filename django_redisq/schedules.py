"""Periodic jobs from settings (``REDISQ["CRON"]``) and from ``@job(cron=...)``.

An entry of ``REDISQ["CRON"]``::

    {"cron": "*/5 * * * *", "func": "myapp.tasks.cleanup", "args": [], "kwargs": {},
     "queue": "default", "timezone": "Europe/Paris", "name": "cleanup"}

``every`` (seconds) may replace ``cron`` for sub-minute intervals. ``timezone`` defaults to
``TIME_ZONE``; ``name`` to the function's name. Names must be distinct: a schedule's name keys
its last tick and its jobs' ids, so two schedules of one name would silently share them.

A tick is enqueued with the options its function's ``@job`` declares (timeout, retry,
priority, TTLs, limits), as ``.delay()`` would enqueue a call.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import replace
from typing import Any

from django.conf import settings

from .engine.cron import TICK_OPTIONS, CronError, CronExpr, Schedule, get_timezone
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
    every = entry.get("every")
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, (int, float)):
            # A string (from an environment variable, say) is not converted: say so plainly.
            raise CronError(f'{where}["every"] must be a positive number of seconds (an int or '
                            f"a float), got the {type(every).__name__} {every!r}")
        if not 0 < every < math.inf:
            raise CronError(f'{where}["every"] must be a positive number of seconds, '
                            f"got {every!r}")
    name = entry.get("name") or func
    if not isinstance(name, str):
        raise CronError(f'{where}["name"] must be a non-empty string, got {name!r}')
    args = entry.get("args", [])
    kwargs = entry.get("kwargs", {})
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise CronError(f'{where}: "args" must be a list and "kwargs" a dict')
    try:
        return Schedule(
            name=name, func=func, queue=queue, cron=cron,
            every=every, args=tuple(args), kwargs=dict(kwargs),
            tz=get_timezone(entry.get("timezone") or settings.TIME_ZONE),
        )
    except CronError as exc:
        raise CronError(f"{where}: {exc}") from None


def job_schedules() -> list[tuple[str, Schedule]]:
    """``@job(cron=...)`` functions registered so far, each with where it is declared."""
    out = []
    for name in registry.names():
        jf = registry.get(name).options.get("job")
        expr = getattr(jf, "options", {}).get("cron")
        if expr and jf is not None:
            out.append((f"@job(cron={expr!r}) on {name}",
                        Schedule(name=name, func=name, queue=jf.queue_name,
                                 cron=CronExpr.parse(expr),
                                 tz=get_timezone(settings.TIME_ZONE))))
    return out


def duplicate_names(labelled: list[tuple[str, Schedule]]) -> list[str]:
    """A message for each schedule name that more than one schedule uses, naming them."""
    by_name: dict[str, list[str]] = {}
    for where, s in labelled:
        by_name.setdefault(s.name, []).append(where)
    return [
        f"{', '.join(wheres[:-1])} and {wheres[-1]} share the name {name!r}: schedules of one "
        f"name share their last-tick record and their jobs' ids, so all but one of them would "
        f'silently not run. Give each a distinct "name" in REDISQ["CRON"] (or @job(name=...)).'
        for name, wheres in by_name.items() if len(wheres) > 1
    ]


def tick_options(func: str) -> dict[str, Any]:
    """The ``@job`` options of ``func`` that its ticks are enqueued with (``TICK_OPTIONS``),
    those it sets; empty for a function this process has not registered."""
    if func not in registry:
        return {}
    opts = getattr(registry.get(func).options.get("job"), "options", {})
    return {k: opts[k] for k in TICK_OPTIONS if opts.get(k) is not None}


def load_schedules() -> list[Schedule]:
    """Every periodic job: settings entries, then ``@job(cron=...)`` functions registered so
    far (workers call this after importing the projects' job modules). Raises ``CronError``
    for a bad entry and for two schedules of one name."""
    from .conf import queue_names, redisq_settings

    names = queue_names()
    labelled = [(f'REDISQ["CRON"][{i}]', parse_entry(e, i, names))
                for i, e in enumerate(redisq_settings().cron)]
    labelled += job_schedules()
    duplicates = duplicate_names(labelled)
    if duplicates:
        raise CronError(" ".join(duplicates))
    # Periodic jobs keep the limits and options their function declares (its key function
    # runs when the scheduler enqueues a tick).
    return [replace(s, limits=registry.get(s.func).options.get("limits"),
                    options=tick_options(s.func))
            if s.func in registry else s for s in (s for _, s in labelled)]


def unrunnable(schedules: list[Schedule]) -> list[str]:
    """Why each schedule that could never run its function would fail: a function no
    ``@job`` registered, or arguments its signature does not take. Meant for a worker, which
    has imported every job module (``manage.py check`` has not, so it cannot tell)."""
    problems = []
    for s in schedules:
        if s.func not in registry:
            problems.append(f"schedule {s.name!r} runs {s.func}, which is no registered @job "
                            f"function (workers import each app's tasks and jobs module, and "
                            f'REDISQ["IMPORTS"])')
            continue
        try:
            inspect.signature(registry.get(s.func).func).bind(*s.args, **s.kwargs)
        except TypeError as exc:
            problems.append(f"schedule {s.name!r} calls {s.func} with args {list(s.args)!r} "
                            f"and kwargs {s.kwargs!r}, which it does not take: {exc}")
        except ValueError:  # no signature to read (a builtin): the tick will tell
            pass
    return problems
