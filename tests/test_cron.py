"""Cron: the parser, the settings check, and exactly-once ticks with several schedulers."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from django.core.checks import run_checks

from django_redisq.conf import clear_cache
from django_redisq.engine import Queue, RedisConnection
from django_redisq.engine.cron import CronError, CronExpr, Schedule
from django_redisq.engine.scheduler import CronScheduler
from tests.conftest import wait_for

UTC = timezone.utc
FRIDAY_1750 = datetime(2026, 11, 27, 17, 50, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize("expr, expected", [
    ("* * * * *", datetime(2026, 11, 27, 17, 51, tzinfo=UTC)),
    ("5 * * * *", datetime(2026, 11, 27, 18, 5, tzinfo=UTC)),           # a value
    ("*/15 * * * *", datetime(2026, 11, 27, 18, 0, tzinfo=UTC)),        # a step
    ("10-50/20 * * * *", datetime(2026, 11, 27, 18, 10, tzinfo=UTC)),   # a range with step
    ("0 9-17 * * mon-fri", datetime(2026, 11, 30, 9, 0, tzinfo=UTC)),   # names, ranges
    ("0 12 1,15 * *", datetime(2026, 12, 1, 12, 0, tzinfo=UTC)),        # a list
    ("0 0 * jan *", datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),            # a month name
    ("0 0 1,15 * sun", datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),       # day OR weekday
    ("0 0 * * 7", datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),            # 7 is Sunday
    ("0 0 */2 * mon", datetime(2026, 12, 7, 0, 0, tzinfo=UTC)),  # '*/2' is a star: odd AND Monday
    ("@hourly", datetime(2026, 11, 27, 18, 0, tzinfo=UTC)),
    ("@daily", datetime(2026, 11, 28, 0, 0, tzinfo=UTC)),
    ("@weekly", datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),
    ("@monthly", datetime(2026, 12, 1, 0, 0, tzinfo=UTC)),
    ("@yearly", datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
])
def test_each_syntax_form(expr, expected):
    assert CronExpr.parse(expr).next_after(FRIDAY_1750) == expected


@pytest.mark.parametrize("expr, message", [
    ("* * *", "has 3 fields"),
    ("60 * * * *", "minute: 60 is out of range 0-59"),
    ("* 24 * * *", "hour: 24 is out of range 0-23"),
    ("* * 0 * *", "day of month: 0 is out of range 1-31"),
    ("* * * 13 *", "month: 13 is out of range 1-12"),
    ("* * * * 8", "day of week: 8 is out of range 0-7"),
    ("*/0 * * * *", "step '0' must be a positive number"),
    ("5-1 * * * *", "range '5-1' goes backwards"),
    ("* * * foo *", "month: 'foo' is not a number or a name"),
    ("1,,2 * * * *", "empty list item"),
    ("@sometimes", "unknown alias"),
])
def test_each_error(expr, message):
    with pytest.raises(CronError, match=message):
        CronExpr.parse(expr)


def test_an_expression_that_never_matches():
    with pytest.raises(CronError, match="never matches"):
        CronExpr.parse("0 0 30 feb *").next_after(FRIDAY_1750)


def test_time_zone_and_daylight_saving():
    paris = ZoneInfo("Europe/Paris")
    # 2027-03-28: clocks jump from 02:00 to 03:00 in Paris; 02:30 does not exist that day.
    expr = CronExpr.parse("30 2 * * *")
    after = datetime(2027, 3, 27, 12, 0, tzinfo=paris)
    assert expr.next_after(after) == datetime(2027, 3, 29, 2, 30, tzinfo=paris)


def test_missed_ticks_run_once_on_recovery():
    s = Schedule(name="s", func="tests.jobs.add", cron=CronExpr.parse("* * * * *"))
    since = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    now = datetime(2026, 11, 27, 10, 7, 30, tzinfo=UTC)  # seven ticks missed
    assert s.last_due(now, since) == datetime(2026, 11, 27, 10, 7, tzinfo=UTC)
    assert s.last_due(now, datetime(2026, 11, 27, 10, 7, tzinfo=UTC)) is None


def test_bad_cron_setting_fails_the_check(settings):
    settings.REDISQ = {**settings.REDISQ, "CRON": [
        {"cron": "*/5 * * *", "func": "tests.jobs.add"},
        {"every": 10, "func": "tests.jobs.add", "queue": "nope"},
        {"cron": "@hourly", "func": "tests.jobs.add", "timezone": "Mars/Olympus"},
    ]}
    clear_cache()
    try:
        errors = [e for e in run_checks(tags=["django_redisq"]) if e.id == "django_redisq.E012"]
        messages = [e.msg for e in errors]
        assert len(errors) == 3, messages
        assert 'REDISQ["CRON"][0]["cron"]' in messages[0] and "has 4 fields" in messages[0]
        assert "'nope' is not a configured queue" in messages[1]
        assert "unknown time zone 'Mars/Olympus'" in messages[2]
    finally:
        clear_cache()


def test_ticks_wait_for_replicas_like_any_enqueue(redis_server, r, caplog):
    """``WAIT_REPLICAS`` applies to cron ticks: on a master without replicas the tick is
    queued, and the scheduler warns that no replica confirmed it."""
    queue = Queue("default", RedisConnection(redis_server.url), wait_replicas=1,
                  wait_timeout_ms=20)
    sched = CronScheduler([Schedule(name="often", func="tests.jobs.add", every=60,
                                    args=(1, 2))], {"default": queue}, "w1", heartbeat=1.0)
    with caplog.at_level(logging.WARNING, logger="django_redisq"):
        asyncio.run(sched.tick(datetime.now(timezone.utc)))
    assert queue.count("queued") == 1
    assert sched.enqueued == 0  # counts confirmed ticks
    assert "schedule often:" in caplog.text and "0 of 1 replica" in caplog.text, caplog.text


def test_three_schedulers_enqueue_each_tick_once_and_survive_the_leader(r, worker_proc):
    env = {"REDISQ_TEST_LEASE": "2", "REDISQ_TEST_HEARTBEAT": "0.2",
           "REDISQ_TEST_CRON": json.dumps([
               {"every": 1, "func": "tests.jobs.record_tick", "name": "tick"}])}
    workers = {name: worker_proc("default", "--name", name, env=env)
               for name in ("w1", "w2", "w3")}
    wait_for(lambda: r.llen("test:ticks") >= 4, timeout=20,
             message=workers["w1"].output())
    leader = r.get("redisq:{cron}:leader").decode()
    workers[leader].signal(signal.SIGKILL)
    before = r.llen("test:ticks")
    wait_for(lambda: r.llen("test:ticks") >= before + 6, timeout=20,  # 10 ticks or more
             message=f"ticks stopped after the leader {leader} died")
    assert r.get("redisq:{cron}:leader").decode() != leader
    ran = [x.decode() for x in r.lrange("test:ticks", 0, -1)]
    ticks = Counter(ran)
    # Each tick is enqueued once: no (tick, attempt) runs twice. A tick job that ran on the
    # killed worker before its outcome was written runs again as attempt 2 (at-least-once).
    attempts = Counter(x.decode() for x in r.lrange("test:tick-attempts", 0, -1))
    assert {t: n for t, n in attempts.items() if n > 1} == {}
    reruns = {t for t, n in ticks.items() if n > 1}
    assert all(f"{t}#2" in attempts for t in reruns), attempts
    assert len(reruns) <= 1  # at most the job the killed worker was running
    assert all(t.startswith("cron:tick:") for t in ticks)
    # One job per second: consecutive tick ids are 1000 ms apart, except across the
    # failover, where missed ticks collapse into one.
    stamps = sorted(int(t.rsplit(":", 1)[1]) for t in ticks)
    assert all(b - a >= 1000 for a, b in itertools.pairwise(stamps))


# -- a tick is enqueued as .delay() would enqueue a call ----------------------------------------
def nightly() -> None:
    """Decorated inside the tests (with ``isolated_registry``): a module-level function, as
    ``@job`` requires, that no worker of other tests schedules."""


@pytest.fixture
def isolated_registry(monkeypatch):
    """``@job`` functions registered by the test are forgotten after it."""
    from django_redisq.engine.registry import registry

    monkeypatch.setattr(registry, "_entries", dict(registry._entries))


def _tick_record(schedules, name, now):
    from django_redisq.conf import all_queues, get_queue

    [s] = [s for s in schedules if s.name == name]
    sched = CronScheduler([s], {q.name: q for q in all_queues()}, "w1", heartbeat=1.0)
    asyncio.run(sched.tick(now))
    queue = get_queue(s.queue)
    [job_id] = [i for i in queue.job_ids("queued") if i.startswith(f"cron:{name}:")]
    return queue.fetch_record(job_id)


def test_a_tick_has_the_options_of_its_job(r, settings, isolated_registry):
    from django_redisq import Retry, job
    from django_redisq.schedules import load_schedules

    retry = Retry(max=2, delay=0.5, jitter=0)
    fn = job("high", cron="* * * * *", timeout=1, retry=retry, priority=50, result_ttl=60,
             failure_ttl=120)(nightly)
    # The same function from REDISQ["CRON"] (with arguments it does not take: the options
    # are the point here, and nothing runs the job).
    settings.REDISQ = {**settings.REDISQ, "CRON": [
        {"cron": "* * * * *", "func": fn.name, "queue": "high", "name": "from-settings"}]}
    clear_cache()
    try:
        schedules = load_schedules()
    finally:
        clear_cache()
    delayed = fn.delay().refresh().record
    for name in (fn.name, "from-settings"):
        rec = _tick_record(schedules, name, datetime.now(UTC))
        assert (rec.timeout, rec.retry, rec.priority) == (1, retry.to_dict(), 50), name
        assert (rec.result_ttl, rec.failure_ttl) == (delayed.result_ttl, delayed.failure_ttl)
        assert (rec.timeout, rec.retry, rec.priority) == (
            delayed.timeout, delayed.retry, delayed.priority)


# -- daylight saving: the repeated hour of a fall-back (Europe/Paris, 2026-10-25) ------------
PARIS = ZoneInfo("Europe/Paris")
# 03:00 CEST (01:00Z) -> 02:00 CET: the wall times 02:00-02:59 occur at 00:00-00:59Z (CEST)
# and again at 01:00-01:59Z (CET).
FALL_BACK = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)


def _firings(expr: str, start: datetime, end: datetime) -> list[str]:
    """``next_due`` followed from ``start`` to ``end``: every firing, in UTC."""
    s = Schedule(name="s", func="tests.jobs.add", cron=CronExpr.parse(expr), tz=PARIS)
    out, t = [], start
    while True:
        t = s.next_due(t)
        if t >= end:
            return out
        out.append(t.astimezone(UTC).strftime("%H:%M"))


def test_a_fixed_time_in_the_repeated_hour_fires_once_at_its_first_occurrence():
    assert _firings("30 2 * * *", FALL_BACK - timedelta(hours=3),
                    FALL_BACK + timedelta(hours=3)) == ["00:30"]  # 02:30 CEST, not CET
    # Asked from inside the repeated hour, after the first 02:30: the next is tomorrow's.
    s = Schedule(name="s", func="tests.jobs.add", cron=CronExpr.parse("30 2 * * *"), tz=PARIS)
    assert s.next_due(FALL_BACK + timedelta(minutes=10)) == datetime(2026, 10, 26, 2, 30,
                                                                     tzinfo=PARIS)


@pytest.mark.parametrize("expr, every", [("*/20 * * * *", 20), ("0 * * * *", 60),
                                         ("@hourly", 60), ("*/10 2 * * *", 10)])
def test_a_rhythm_keeps_its_rhythm_through_the_repeated_hour(expr, every):
    start = FALL_BACK - timedelta(hours=1, seconds=1)
    end = FALL_BACK + timedelta(hours=1)
    got = _firings(expr, start, end)
    expected = []
    t = FALL_BACK - timedelta(hours=1)
    while t < end:
        expected.append(t.strftime("%H:%M"))
        t += timedelta(minutes=every)
    assert got == expected  # both 02:xx hours, each firing once, no gap


@pytest.mark.parametrize("expr", ["*/5 * * * *", "* * * * *", "30 2 * * *", "0 * * * *",
                                  "15,45 1-3 * * *", "@daily"])
def test_next_due_is_always_after_now_around_the_fall_back(expr):
    s = Schedule(name="s", func="tests.jobs.add", cron=CronExpr.parse(expr), tz=PARIS)
    now = FALL_BACK - timedelta(hours=2)
    while now < FALL_BACK + timedelta(hours=2):
        for current in (now, now.astimezone(PARIS)):  # however the caller's now is zoned
            assert s.next_due(current) > current, current
        now += timedelta(seconds=37)


def test_the_scheduler_replays_each_tick_of_the_repeated_hour_once():
    """``last_due`` asked every 20 s, as the scheduler's loop does: every 5 minutes fires,
    through both 02:xx hours, each tick once."""
    s = Schedule(name="s", func="tests.jobs.add", cron=CronExpr.parse("*/5 * * * *"), tz=PARIS)
    since = FALL_BACK - timedelta(minutes=30)
    now, fired = since, []
    while now < FALL_BACK + timedelta(minutes=90):
        now += timedelta(seconds=20)
        due = s.last_due(now, since)
        if due is not None:
            assert due.astimezone(UTC) > since
            fired.append(due.astimezone(UTC))
            since = due
    assert fired == [FALL_BACK - timedelta(minutes=25) + timedelta(minutes=5 * i)
                     for i in range(24)]


class _FrozenClock(datetime):
    """``datetime`` whose ``now()`` is 02:02 CET, in the repeated hour (see the test)."""

    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def]
        return datetime.fromtimestamp((FALL_BACK + timedelta(minutes=2)).timestamp(), tz)


def test_the_scheduler_loop_sleeps_until_the_next_tick_in_the_repeated_hour(
        redis_server, r, monkeypatch):
    """At 02:02 CET the next */5 tick is 02:05 CET, three minutes ahead: the loop sleeps
    that long. (It used to see 02:05 CEST, an hour ago, and wake every millisecond.)"""
    from django_redisq.engine import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "datetime", _FrozenClock)
    queue = Queue("default", RedisConnection(redis_server.url))
    s = Schedule(name="five", func="tests.jobs.add", cron=CronExpr.parse("*/5 * * * *"),
                 tz=PARIS, args=(1, 2))
    sched = CronScheduler([s], {"default": queue}, "w1", heartbeat=600.0)
    waits: list[float] = []

    async def sleep(closed: asyncio.Event, seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            closed.set()

    sched._sleep = sleep  # type: ignore[method-assign]
    asyncio.run(asyncio.wait_for(sched.run(asyncio.Event()), 30))
    assert sched.leading
    assert [round(w) for w in waits] == [180, 180], waits


# -- one schedule's trouble is its own -------------------------------------------------------
def test_an_expression_that_never_matches_fails_where_it_is_written(settings, isolated_registry):
    from django_redisq import job

    with pytest.raises(CronError, match=r"never matches: its months \(apr\) have no day 31"):
        CronExpr.parse("0 0 31 4 *")
    CronExpr.parse("0 0 29 2 *")  # leap years
    with pytest.raises(ValueError, match=r"@job\(cron=...\): '0 0 31 4 \*' never matches"):
        job(cron="0 0 31 4 *")(nightly)
    settings.REDISQ = {**settings.REDISQ, "CRON": [
        {"cron": "0 0 30 2 *", "func": "tests.jobs.add", "args": [1, 2]}]}
    clear_cache()
    try:
        [error] = [e for e in run_checks(tags=["django_redisq"])
                   if e.id == "django_redisq.E012"]
        assert 'REDISQ["CRON"][0]["cron"]' in error.msg and "never matches" in error.msg
    finally:
        clear_cache()


def _run_once(sched: CronScheduler) -> None:
    """One turn of the scheduler's real loop (its sleep ends the loop)."""
    async def stop(closed: asyncio.Event, seconds: float) -> None:
        closed.set()

    sched._sleep = stop  # type: ignore[method-assign]
    asyncio.run(asyncio.wait_for(sched.run(asyncio.Event()), 30))


def test_a_schedule_that_cannot_compute_its_times_is_dropped_and_the_others_go_on(
        redis_server, r, caplog):
    queue = Queue("default", RedisConnection(redis_server.url))
    # Built around the parser's check, as a schedule from an older release could be.
    never = CronExpr("0 0 31 4 *", frozenset({0}), frozenset({0}), frozenset({31}),
                     frozenset({4}), frozenset(range(7)), False, True)
    sched = CronScheduler([Schedule(name="april-31", func="tests.jobs.add", cron=never),
                           Schedule(name="often", func="tests.jobs.add", every=60,
                                    args=(1, 2))], {"default": queue}, "w1", heartbeat=1.0)
    with caplog.at_level(logging.ERROR, logger="django_redisq"):
        _run_once(sched)  # used to raise CronError, which stopped the worker
    assert [s.name for s in sched.schedules] == ["often"]
    assert "schedule april-31 dropped" in caplog.text and "never matches" in caplog.text
    assert [i.split(":")[1] for i in queue.job_ids("queued")] == ["often"]


def test_a_tick_that_cannot_be_prepared_does_not_stop_the_schedules_after_it(
        redis_server, r, caplog):
    queue = Queue("default", RedisConnection(redis_server.url))
    sched = CronScheduler([
        Schedule(name="broken", func="tests.jobs.echo", every=60, args=(object(),)),
        Schedule(name="fine", func="tests.jobs.add", every=60, args=(1, 2)),
    ], {"default": queue}, "w1", heartbeat=1.0)
    now = datetime.now(UTC)
    with caplog.at_level(logging.ERROR, logger="django_redisq"):
        asyncio.run(sched.tick(now))
        asyncio.run(sched.tick(now))  # the same tick again: logged once
    assert [i.split(":")[1] for i in queue.job_ids("queued")] == ["fine"]
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1 and "schedule broken: cannot enqueue tests.jobs.echo" in errors[0]


# -- two schedules of one name ------------------------------------------------------------------
def test_two_schedules_of_one_name_are_refused(settings, isolated_registry):
    from django_redisq import job
    from django_redisq.schedules import load_schedules

    fn = job(cron="0 3 * * *")(nightly)
    settings.REDISQ = {**settings.REDISQ, "CRON": [
        {"cron": "0 3 * * *", "func": "tests.jobs.record", "args": ["site-a"]},
        {"cron": "0 3 * * *", "func": "tests.jobs.record", "args": ["site-b"]},
        {"every": 60, "func": fn.name},
    ]}
    clear_cache()
    try:
        errors = [e.msg for e in run_checks(tags=["django_redisq"])
                  if e.id == "django_redisq.E012"]
        assert errors == [
            "REDISQ[\"CRON\"][0] and REDISQ[\"CRON\"][1] share the name 'tests.jobs.record': "
            "schedules of one name share their last-tick record and their jobs' ids, so all "
            "but one of them would silently not run. Give each a distinct \"name\" in "
            "REDISQ[\"CRON\"] (or @job(name=...)).",
            f"REDISQ[\"CRON\"][2] and @job(cron='0 3 * * *') on {fn.name} share the name "
            f"'{fn.name}': schedules of one name share their last-tick record and their jobs' "
            f"ids, so all but one of them would silently not run. Give each a distinct "
            f"\"name\" in REDISQ[\"CRON\"] (or @job(name=...)).",
        ]
        with pytest.raises(CronError, match=r"share the name 'tests\.jobs\.record'"):
            load_schedules()  # the worker refuses to start
        settings.REDISQ = {**settings.REDISQ, "CRON": [
            {"cron": "0 3 * * *", "func": "tests.jobs.record", "args": ["site-a"], "name": "a"},
            {"cron": "0 3 * * *", "func": "tests.jobs.record", "args": ["site-b"], "name": "b"},
        ]}
        clear_cache()
        assert [e for e in run_checks(tags=["django_redisq"]) if e.id.startswith(
            "django_redisq.E")] == []
        assert sorted(s.name for s in load_schedules()) == ["a", "b", fn.name]
    finally:
        clear_cache()


# -- @job(cron=...) is checked at decoration ------------------------------------------------
@pytest.mark.parametrize("cron, error, message", [
    ("*/5 * * *", ValueError, "has 4 fields"),
    ("61 * * * *", ValueError, "minute: 61 is out of range"),
    ("@sometimes", ValueError, "unknown alias"),
    (5, TypeError, "takes a cron expression"),
])
def test_a_bad_cron_fails_at_decoration(cron, error, message, isolated_registry):
    from django_redisq import job

    with pytest.raises(error, match=message):
        job(cron=cron)(nightly)


def needs_an_argument(site: str) -> None:
    """A cron tick calls its function without arguments: this one cannot be a @job(cron)."""


def test_a_cron_job_must_take_no_arguments(isolated_registry):
    from django_redisq import job

    with pytest.raises(TypeError, match="ticks call it without arguments"):
        job(cron="@daily")(needs_an_argument)
