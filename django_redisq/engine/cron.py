"""Cron expressions and periodic schedules.

A small parser for the standard 5-field syntax (minute hour day-of-month month day-of-week)
with ranges (``1-5``), steps (``*/15``, ``10-50/20``), lists (``1,15,30``), names (``jan``,
``mon``) and the ``@yearly``/``@monthly``/``@weekly``/``@daily``/``@hourly`` aliases. As in
Vixie cron, when both day fields are restricted a day matches either. Written here rather than
taken from a dependency: it is ~100 lines, and next-time computation must work on aware
datetimes in a chosen time zone, which the scheduler needs anyway.

Daylight saving, as Vixie cron and cronie handle it:

* a wall-clock time that a jump forward skips does not exist, and does not fire;
* a wall-clock time that a jump back repeats fires once, at its first occurrence, when the
  expression names a fixed time (``30 2 * * *``); an expression with ``*`` leading its minute
  or hour field (``*/5 * * * *``, ``0 * * * *``, ``@hourly``) keeps its rhythm and fires at
  both occurrences, so "every five minutes" has no hour-long gap. Each occurrence is its own
  instant, so its tick (and job id) is distinct.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
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


#: Most days in each month (February: 29, leap years exist): an expression whose days of the
#: month never occur in its months (``0 0 31 4 *``, 31 April) never matches.
MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30,
              12: 31}
#: How far ahead ``next_after`` looks. Any expression that passes ``parse`` matches within 8
#: years (29 February, across a century year that is not a leap year); more is a safety net.
SEARCH_YEARS = 9
#: A jump back of the clock is looked for this far ahead (Vixie cron's limit too): time zones'
#: daylight-saving shifts are an hour, some 30 minutes.
FOLD_HORIZON = timedelta(hours=3)
UTC = timezone.utc
#: The ``@job`` options a periodic job's ticks are enqueued with (``Schedule.options``).
TICK_OPTIONS = ("timeout", "retry", "priority", "result_ttl", "failure_ttl")


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
    #: ``*`` leads the minute or hour field (Vixie cron's MIN_STAR/HR_STAR): the expression
    #: is a rhythm, not a fixed time, and fires at both occurrences of a repeated wall time.
    rhythm: bool = field(default=False, repr=False)

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
        expr = cls(text, sets[0], sets[1], sets[2], sets[3], weekdays,
                   # As Vixie cron's DOM_STAR/DOW_STAR: a field that starts with '*' (also
                   # '*/2') counts as unrestricted, so the day fields are then ANDed.
                   parts[2].startswith("*"), parts[4].startswith("*"),
                   rhythm=parts[0].startswith("*") or parts[1].startswith("*"))
        expr._check_matches()
        return expr

    def _check_matches(self) -> None:
        """Raise ``CronError`` for an expression that never matches, so that it fails where it
        is written (``@job``, ``manage.py check``) rather than in the scheduler. Only a day of
        the month restricted alone can: with a restricted weekday too, either matches, and
        every month has every weekday."""
        if self.day_star or not self.weekday_star:
            return
        if any(day <= MONTH_DAYS[month] for month in self.months for day in self.days):
            return
        months = ", ".join(sorted((m for m in MONTHS if MONTHS[m] in self.months),
                                  key=MONTHS.__getitem__))
        raise CronError(f"{self.text!r} never matches: its months ({months}) have no day "
                        f"{', '.join(str(d) for d in sorted(self.days))}")

    def _day_matches(self, dt: datetime) -> bool:
        dom = dt.day in self.days
        dow = (dt.isoweekday() % 7) in self.weekdays
        if self.day_star or self.weekday_star:
            return dom and dow
        return dom or dow

    def _walk(self, t: datetime, limit: datetime) -> Iterator[datetime]:
        """Matching naive wall-clock minutes from ``t`` (a whole minute) up to ``limit``, in
        order, skipping months, days and hours that cannot match."""
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += timedelta(minutes=1)
            else:
                yield t
                t += timedelta(minutes=1)

    def _instants(self, wall: datetime, tz: tzinfo) -> list[datetime]:
        """The UTC instants at which the naive wall time ``wall`` fires in ``tz``: none in a
        gap (the clock jumped over it), one normally, and in a fold (the clock went back over
        it) the first occurrence, plus the second for a rhythm (see the module docstring).
        PEP 495: ``fold=0`` takes the offset before a transition, ``fold=1`` the one after."""
        first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first > second:  # a gap: each fold names a time on the other side of it
            return []
        return [first, second] if self.rhythm else [first]

    def next_after(self, after: datetime) -> datetime:
        """The first firing strictly after the instant ``after`` (an aware datetime), as an
        aware datetime in ``after``'s time zone (``fold`` set for a repeated wall time).

        Wall times are walked in order, but a repeated hour breaks the order of instants: the
        second 02:10 comes after the first 02:50. Every candidate is therefore compared as a
        UTC instant (aware datetimes of one ``tzinfo`` compare by wall time, ignoring fold),
        and for a rhythm the repeated hour ahead is searched separately."""
        tz = after.tzinfo
        if tz is None or after.utcoffset() is None:
            raise ValueError("next_after needs an aware datetime")
        after_utc = after.astimezone(UTC)
        start = after.replace(second=0, microsecond=0, tzinfo=None, fold=0) + timedelta(minutes=1)
        best: datetime | None = None
        for wall in self._walk(start, start + timedelta(days=366 * SEARCH_YEARS)):
            later = [u for u in self._instants(wall, tz) if u > after_utc]
            if later:
                best = later[0]
                break
        if self.rhythm:
            repeated = self._first_in_next_fold(after_utc, tz)
            if repeated is not None and (best is None or repeated < best):
                best = repeated
        if best is None:
            raise CronError(f"{self.text!r} never matches (e.g. 30 February)")
        return best.astimezone(tz)

    def _first_in_next_fold(self, after_utc: datetime, tz: tzinfo) -> datetime | None:
        """The first match among the second occurrences of the wall times that a jump back of
        the clock within ``FOLD_HORIZON`` after ``after_utc`` repeats, as a UTC instant; these
        come after ``after_utc`` although their wall times may be earlier than its own."""
        before = after_utc.astimezone(tz).utcoffset()
        horizon = after_utc + FOLD_HORIZON
        behind = horizon.astimezone(tz).utcoffset()
        if before is None or behind is None or behind >= before:
            return None
        # The transition: the first second at which the offset is ``behind`` (transitions
        # fall on whole seconds). Bisection: about 14 steps over three hours.
        lo, hi = math.floor(after_utc.timestamp()), math.ceil(horizon.timestamp())
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == before:
                lo = mid
            else:
                hi = mid
        switch = datetime.fromtimestamp(hi, UTC)
        # The repeated wall times: from the switch read in the new offset, for the shift.
        wall_start = switch.astimezone(tz).replace(tzinfo=None, fold=0)
        wall_end = wall_start + (before - behind)
        first_minute = wall_start.replace(second=0, microsecond=0)
        if first_minute < wall_start:
            first_minute += timedelta(minutes=1)
        for wall in self._walk(first_minute, wall_end):
            second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
            if second > after_utc:
                return second
        return None


def get_timezone(name: str | None) -> tzinfo:
    if not name or name == "UTC":
        return timezone.utc
    if not isinstance(name, str):
        raise CronError(f"a time zone is a name such as 'Europe/Paris', got {name!r}")
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
    #: The options of ``TICK_OPTIONS`` the function declares (``@job(timeout=...)`` etc.):
    #: a tick is enqueued as ``.delay()`` would enqueue a call. A mapping, not Django's
    #: ``JobFunction``: the engine does not import Django.
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise CronError(f"schedule {self.name!r} needs exactly one of cron or every")
        every = self.every
        if every is not None and (isinstance(every, bool) or not isinstance(every, (int, float))
                                  or not 0 < every < math.inf):
            raise CronError(f"schedule {self.name!r}: every must be a positive number of "
                            f"seconds (an int or a float), got {every!r}")
        unknown = set(self.options) - set(TICK_OPTIONS)
        if unknown:
            raise CronError(f"schedule {self.name!r}: unknown option(s) "
                            f"{', '.join(sorted(unknown))}; known: {', '.join(TICK_OPTIONS)}")

    def last_due(self, now: datetime, since: datetime | None) -> datetime | None:
        """The latest tick in ``(since, now]``, or ``None``. Ticks missed while no scheduler
        ran are collapsed into this one: a schedule runs once on recovery, not N times.

        Returned in UTC, as ``next_due``: aware datetimes of one time zone compare and
        subtract by wall time, ignoring ``fold``, which is wrong in a repeated hour."""
        if self.every is not None:
            period = self.every
            tick = int(now.timestamp() // period) * period
            if since is not None and tick <= since.timestamp():
                return None
            return datetime.fromtimestamp(tick, tz=timezone.utc)
        assert self.cron is not None
        now = now.astimezone(UTC)
        start = since if since is not None else now - timedelta(minutes=1)
        due = None
        t = self.cron.next_after(start.astimezone(self.tz)).astimezone(UTC)
        while t <= now:
            due = t
            t = self.cron.next_after(t.astimezone(self.tz)).astimezone(UTC)
        return due

    def next_due(self, now: datetime) -> datetime:
        """The next tick, strictly after ``now`` (also across a repeated hour), in UTC (see
        ``last_due``): the scheduler sleeps until then, so a time at or before ``now`` would
        make it spin."""
        if self.every is not None:
            tick = (int(now.timestamp() // self.every) + 1) * self.every
            return datetime.fromtimestamp(tick, tz=timezone.utc)
        assert self.cron is not None
        return self.cron.next_after(now.astimezone(self.tz)).astimezone(UTC)
