"""Cron expressions and periodic schedules.

A small parser for the standard 5-field syntax (minute hour day-of-month month day-of-week)
with ranges (``1-5``), steps (``*/15``, ``10-50/20``), lists (``1,15,30``), names (``jan``,
``mon``) and the ``@yearly``/``@monthly``/``@weekly``/``@daily``/``@hourly`` aliases. As in
Vixie cron, when both day fields are restricted a day matches either. Written here rather than
taken from a dependency: it is ~100 lines, and next-time computation must work on aware
datetimes in a chosen time zone, which the scheduler needs anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .limits import Limits

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (name, low, high, names)
FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
    ("month", 1, 12, MONTHS), ("day of week", 0, 7, DAYS),
)


class CronError(ValueError):
    """An invalid cron expression; the message names the field and what is wrong."""


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise CronError(f"{name}: {text!r} is not a number" +
                        (f" or a name ({', '.join(names)})" if names else ""))
    n = int(text)
    if not low <= n <= high:
        raise CronError(f"{name}: {n} is out of range {low}-{high}")
    return n


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name}: empty list item in {text!r}")
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start = _value(a, name, low, high, names)
            end = _value(b, name, low, high, names)
            if start > end:
                raise CronError(f"{name}: range {part!r} goes backwards")
        else:
            start = _value(part, name, low, high, names)
            end = high if step > 1 else start
        out.update(range(start, end + 1, step))
    return frozenset(out)


@dataclass(frozen=True)
class CronExpr:
    """A parsed 5-field cron expression."""

    text: str
    minutes: frozenset[int] = field(repr=False)
    hours: frozenset[int] = field(repr=False)
    days: frozenset[int] = field(repr=False)
    months: frozenset[int] = field(repr=False)
    weekdays: frozenset[int] = field(repr=False)
    day_star: bool = field(repr=False)
    weekday_star: bool = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> CronExpr:
        if not isinstance(text, str):
            raise CronError(f"a cron expression is a string, got {text!r}")
        expanded = ALIASES.get(text.strip().lower(), text)
        if expanded.strip().startswith("@"):
            raise CronError(f"unknown alias {text!r}; use one of {', '.join(ALIASES)}")
        parts = expanded.split()
        if len(parts) != 5:
            raise CronError(f"{text!r} has {len(parts)} fields; cron expressions have 5 "
                            f"(minute hour day-of-month month day-of-week)")
        sets = [_field(p, *spec) for p, spec in zip(parts, FIELDS)]
        weekdays = frozenset(d % 7 for d in sets[4])  # 7 is Sunday too
        return cls(text, sets[0], sets[1], sets[2], sets[3], weekdays,
                   parts[2] == "*", parts[4] == "*")

    def _day_matches(self, dt: datetime) -> bool:
        dom = dt.day in self.days
        dow = (dt.isoweekday() % 7) in self.weekdays
        if self.day_star or self.weekday_star:
            return dom and dow
        return dom or dow

    def next_after(self, after: datetime) -> datetime:
        """The first matching minute strictly after ``after`` (an aware datetime), in the
        same time zone. Wall-clock minutes skipped by a DST jump do not fire."""
        tz = after.tzinfo
        if tz is None:
            raise ValueError("next_after needs an aware datetime")
        t = after.replace(second=0, microsecond=0, tzinfo=None) + timedelta(minutes=1)
        limit = t + timedelta(days=366 * 5)
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            aware = t.replace(tzinfo=tz)
            # A wall time that does not exist (DST gap) round-trips to another time: skip it.
            if aware.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) == t:
                return aware
            t += timedelta(minutes=1)
        raise CronError(f"{self.text!r} never matches (e.g. 30 February)")


def get_timezone(name: str | None) -> tzinfo:
    if not name or name == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f"unknown time zone {name!r}") from exc


@dataclass(frozen=True)
class Schedule:
    """A periodic job: a cron expression or a fixed interval (``every`` seconds)."""

    name: str
    func: str
    queue: str = "default"
    cron: CronExpr | None = None
    every: float | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    tz: tzinfo = timezone.utc
    #: The function's concurrency and rate limits (``@job(max_concurrency=...)`` etc.).
    limits: Limits | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise CronError(f"schedule {self.name!r} needs exactly one of cron or every")
        if self.every is not None and not self.every > 0:
            raise CronError(f"schedule {self.name!r}: every must be a positive number of "
                            f"seconds")

    def last_due(self, now: datetime, since: datetime | None) -> datetime | None:
        """The latest tick in ``(since, now]``, or ``None``. Ticks missed while no scheduler
        ran are collapsed into this one: a schedule runs once on recovery, not N times."""
        if self.every is not None:
            period = self.every
            tick = int(now.timestamp() // period) * period
            if since is not None and tick <= since.timestamp():
                return None
            return datetime.fromtimestamp(tick, tz=timezone.utc)
        assert self.cron is not None
        start = since if since is not None else now - timedelta(minutes=1)
        local = start.astimezone(self.tz)
        due = None
        t = self.cron.next_after(local)
        while t <= now:
            due = t
            t = self.cron.next_after(t)
        return due

    def next_due(self, now: datetime) -> datetime:
        if self.every is not None:
            tick = (int(now.timestamp() // self.every) + 1) * self.every
            return datetime.fromtimestamp(tick, tz=timezone.utc)
        assert self.cron is not None
        return self.cron.next_after(now.astimezone(self.tz))
