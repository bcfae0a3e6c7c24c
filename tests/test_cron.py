"""Cron: the parser, the settings check, and exactly-once ticks with several schedulers."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
from collections import Counter
from datetime import datetime, timezone
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
