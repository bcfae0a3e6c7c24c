"""Operator commands: rqstats (table, JSON, refresh, health check), rqenqueue, rqrequeue,
rqsuspend and rqresume, against a real Redis and real worker processes."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_redisq import get_queue
from django_redisq.engine.keys import STATES, suspended_key, worker_key, workers_key
from tests import jobs
from tests.conftest import wait_for

FAST = {"REDISQ_TEST_HEARTBEAT": "0.2"}


def run(*args: str, **options: object) -> tuple[str, str]:
    """Run a command; its stdout and stderr."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def burst(*queues: str) -> None:
    call_command("rqworker", *(queues or ("default", "high", "low")), "--burst", verbosity=0)


def stats() -> dict:
    out, _ = run("rqstats", "--json")
    return json.loads(out)


def worker_field(r, name: str, field: str) -> str | None:
    value = r.hget(worker_key("redisq", name), field)
    return value.decode() if value is not None else None


def last_beat(r, name: str) -> int:
    """The worker's latest heartbeat (its score in the registry; an idle worker's beat does not
    rewrite its hash)."""
    return int(r.zscore(workers_key("redisq"), name) or 0)


def until(predicate, w, timeout: float = 10):  # type: ignore[no-untyped-def]
    """``wait_for`` that shows the worker's log when the condition is not met."""
    try:
        return wait_for(predicate, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"condition not met within {timeout} s; worker log:\n"
                             f"{w.output()}") from None


def fake_worker(r, name: str, queues: str, age_ms: int) -> None:
    """A registry entry whose last heartbeat was ``age_ms`` ago (Redis server time)."""
    seconds, micros = r.time()
    beat = seconds * 1000 + micros // 1000 - age_ms
    r.hset(worker_key("redisq", name), mapping={
        "name": name, "host": "h", "pid": 1, "queues": queues, "concurrency": 1,
        "started": beat, "jobs": "", "processed": 0, "failed": 0, "state": "idle",
        "last_beat": beat})
    r.zadd(workers_key("redisq"), {name: beat})


# -- rqstats ------------------------------------------------------------------------------------
def test_rqstats_json_counts_per_queue_and_state():
    jobs.add.delay(1, 2)
    jobs.add.delay(3, 4)
    jobs.async_add.delay(1, 1)  # high
    jobs.fail.delay("x")
    jobs.add.using(delay=60).delay(5, 6)
    burst("default", "high")  # add/async_add finish, fail fails; the delayed one waits
    jobs.add.delay(7, 8)  # queued

    data = stats()
    assert list(data["queues"]) == ["default", "high", "low"]
    default = data["queues"]["default"]
    assert {s: default[s] for s in STATES} == {
        "scheduled": 1, "queued": 1, "started": 0, "deferred": 0, "finished": 2, "failed": 1,
        "canceled": 0}
    assert default["workers"] == 0
    assert data["queues"]["high"]["finished"] == 1
    assert data["queues"]["low"] == {**dict.fromkeys(STATES, 0), "workers": 0}
    assert data["workers"] == [] and data["workers_total"] == 0
    assert data["suspended"] is False


def test_rqstats_table_and_queue_selection():
    jobs.add.delay(1, 2)
    out, err = run("rqstats", "default")
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["queue", *STATES, "workers"]
    assert lines[1].split() == ["default", "0", "1", "0", "0", "0", "0", "0", "0"]
    assert not any(line.startswith(("high", "low")) for line in lines)
    assert "workers: 0 live, 0 dead" in out


def test_rqstats_unknown_queue():
    with pytest.raises(CommandError, match=r"unknown queue.*nope.*configured queues: default"):
        run("rqstats", "nope")


def test_rqstats_interval_is_bounded_by_count():
    out, _ = run("rqstats", "--json", "--interval", "0.01", "--count", "3")
    reports = [json.loads(line) for line in out.splitlines()]
    assert len(reports) == 3
    assert all(set(rep["queues"]) == {"default", "high", "low"} for rep in reports)
    out, _ = run("rqstats", "--interval", "0.01", "--count", "2")
    assert out.count("queue ") == 2


@pytest.mark.parametrize("flags", [["--interval", "0"], ["--interval", "nan"],
                                   ["--interval", "1", "--count", "0"]])
def test_rqstats_rejects_bad_refresh_options(flags):
    with pytest.raises(CommandError, match="must be"):
        run("rqstats", *flags)


def test_rqstats_lists_live_workers(r, worker_proc):
    w = worker_proc("default", "high", "low", "--name", "w-stats", env=FAST)
    until(lambda: worker_field(r, "w-stats", "state") == "idle", w, timeout=20)
    data = stats()
    [info] = data["workers"]
    assert info["name"] == "w-stats" and info["alive"] is True and info["state"] == "idle"
    assert info["queues"] == ["default", "high", "low"]
    assert info["pid"] == w.pid and info["concurrency"] == 10
    assert all(q["workers"] == 1 for q in data["queues"].values())
    out, _ = run("rqstats")
    assert "workers: 1 live, 0 dead" in out
    assert any(line.split()[:3] == ["w-stats", "idle", "default,high,low"]
               for line in out.splitlines())


def test_rqstats_shows_a_silent_worker_as_dead(r):
    fake_worker(r, "gone", "default", age_ms=60_000)  # HEARTBEAT 5 s: dead after 15 s
    [info] = stats()["workers"]
    assert info["alive"] is False and info["state"] == "dead" and info["age"] >= 60
    out, _ = run("rqstats")
    assert "workers: 0 live, 1 dead" in out


# -- rqstats --check ----------------------------------------------------------------------------
def test_check_fails_without_a_worker_naming_the_queues():
    with pytest.raises(CommandError, match=r"no live worker serves queue\(s\) default, high, "
                                           r"low.*rqworker default high low") as exc:
        run("rqstats", "--check")
    assert exc.value.returncode == 1


def test_check_fails_for_a_stale_worker(r):
    fake_worker(r, "stale", "default", age_ms=25_000)  # dead after 4 x HEARTBEAT (20 s)
    with pytest.raises(CommandError, match=r"queue\(s\) default:"):
        run("rqstats", "--check", "default")
    fake_worker(r, "fresh", "default", age_ms=1_000)
    out, _ = run("rqstats", "--check", "default")
    assert out.strip() == "ok: default (1 live worker)"


def test_check_passes_with_a_live_worker_and_names_unserved_queues(r, worker_proc):
    w = worker_proc("default", "high", "low", "--name", "w-check", env=FAST)
    until(lambda: worker_field(r, "w-check", "state"), w, timeout=20)
    out, _ = run("rqstats", "--check")
    assert out.strip() == ("ok: default (1 live worker), high (1 live worker), "
                           "low (1 live worker)")
    out, _ = run("rqstats", "--check", "--json")
    assert json.loads(out) == {"ok": True, "unserved": [], "suspended": False, "serving": {
        "default": ["w-check"], "high": ["w-check"], "low": ["w-check"]}}

    w.kill()  # SIGKILL: it deregisters nothing
    fake_worker(r, "only-default", "default", age_ms=0)
    r.delete(worker_key("redisq", "w-check"))  # as if its hash expired
    with pytest.raises(CommandError, match=r"queue\(s\) high, low:") as exc:
        run("rqstats", "--check", "default", "high", "low")
    assert "default" not in str(exc.value).split(":")[0]


# -- rqenqueue ----------------------------------------------------------------------------------
def test_rqenqueue_runs_with_json_args():
    out, _ = run("rqenqueue", "tests.jobs.add", "1", "2")
    assert out.startswith("enqueued tests.jobs.add on default: job ")
    job = get_queue("default").job(out.split()[-1])
    assert job.status == "queued"
    burst()
    assert job.get(timeout=10) == 3


def test_rqenqueue_kwargs_queue_and_delay():
    out, _ = run("rqenqueue", "tests.jobs.echo", "--kwargs", '{"value": {"a": [1, "x"]}}',
                 "--queue", "low", verbosity=0)
    job = get_queue("low").job(out.strip())
    out, _ = run("rqenqueue", "tests.jobs.add", "1", "--kwargs", '{"b": 2}', "--delay", "60")
    assert " in 60 s: job " in out
    delayed = get_queue("default").job(out.split()[-1])
    assert delayed.status == "scheduled"
    burst("low")
    assert job.get(timeout=10) == {"a": [1, "x"]}


def test_rqenqueue_uses_the_jobs_own_queue():
    out, _ = run("rqenqueue", "tests.jobs.async_add", "2", "3")
    assert " on high: " in out
    assert get_queue("high").count("queued") == 1


def test_rqenqueue_unknown_function_says_how_to_register():
    with pytest.raises(CommandError) as exc:
        run("rqenqueue", "tests.jobs.addd", "1", "2")
    msg = str(exc.value)
    assert "'tests.jobs.addd' is not a registered job" in msg
    assert "Did you mean tests.jobs.add" in msg
    assert "@job" in msg and "tasks.py" in msg and "REDISQ['IMPORTS']" in msg
    assert all(get_queue(q).count("queued") == 0 for q in ("default", "high", "low"))


@pytest.mark.parametrize(("argv", "match"), [
    (["tests.jobs.add", "hello", "2"], "argument 1 is not JSON"),
    (["tests.jobs.add", "1", "--kwargs", "[2]"], "--kwargs must be a JSON object"),
    (["tests.jobs.add", "1"], r"cannot enqueue tests.jobs.add:.*missing .*'b'"),
    (["tests.jobs.add", "1", "2", "--queue", "nope"], "unknown queue 'nope'"),
    (["tests.jobs.add", "1", "2", "--delay", "-1"], "--delay must not be negative"),
])
def test_rqenqueue_rejects_bad_input(argv, match):
    with pytest.raises(CommandError, match=match):
        run("rqenqueue", *argv)
    assert get_queue("default").count("queued") == 0


# -- rqrequeue ----------------------------------------------------------------------------------
def test_rqrequeue_failed_moves_every_failed_job_back():
    failed = [jobs.fail.delay(str(i)) for i in range(3)]
    burst("default")
    assert all(j.status == "failed" for j in failed)
    out, _ = run("rqrequeue", "--queue", "default", "--failed")
    assert out.strip() == "requeued 3 failed jobs on default"
    assert all(j.status == "queued" for j in failed)
    assert get_queue("default").counts()["failed"] == 0
    out, _ = run("rqrequeue", "--queue", "default", "--failed")
    assert out.strip() == "requeued 0 failed jobs on default"


def test_rqrequeue_by_id_reports_jobs_it_could_not_move():
    a, b = jobs.fail.delay("a"), jobs.fail.delay("b")
    burst("default")
    queued = jobs.add.delay(1, 2)
    out, _ = run("rqrequeue", "--queue", "default", a.id)
    assert out.strip() == "requeued 1 job on default"
    assert a.status == "queued" and b.status == "failed"
    with pytest.raises(CommandError, match=rf"not requeued: {queued.id} \(queued\), "
                                           r"missing \(not found\)"):
        run("rqrequeue", "--queue", "default", b.id, queued.id, "missing")
    assert b.status == "queued"


@pytest.mark.parametrize("argv", [["--queue", "default"], ["--failed", "some-id"]])
def test_rqrequeue_needs_failed_or_ids(argv):
    with pytest.raises(CommandError, match="give either --failed"):
        run("rqrequeue", *argv)


# -- rqsuspend / rqresume -----------------------------------------------------------------------
def test_suspend_and_resume_a_live_worker(r, worker_proc):
    w = worker_proc("default", "--name", "w-susp", env=FAST)
    until(lambda: worker_field(r, "w-susp", "state") == "idle", w, timeout=20)

    out, _ = run("rqsuspend")
    assert out.startswith("workers suspended until rqresume")
    until(lambda: worker_field(r, "w-susp", "state") == "suspended", w)
    job = jobs.add.delay(1, 2)
    # The job stays queued across several heartbeats of the suspended worker.
    beat = last_beat(r, "w-susp")
    for _ in range(3):
        beat = until(lambda b=beat: (x := last_beat(r, "w-susp")) > b and x, w)
        assert job.status == "queued"
    assert worker_field(r, "w-susp", "state") == "suspended"
    data = stats()
    assert data["suspended"] is True and data["suspended_for"] is None
    assert data["workers"][0]["state"] == "suspended"
    assert "SUSPENDED until rqresume" in run("rqstats")[0]

    out, _ = run("rqresume")
    assert out.strip() == "workers resumed"
    assert job.get(timeout=10) == 3
    until(lambda: worker_field(r, "w-susp", "state") == "idle", w)
    assert stats()["suspended"] is False
    assert w.proc.poll() is None  # suspended and resumed without exiting
    assert "suspended" in w.output() and "resumed" in w.output()


def test_suspension_reaches_workers_before_their_next_heartbeat(r, worker_proc):
    """With a 20 s heartbeat, only the Pub/Sub notice can make the worker react this fast."""
    w = worker_proc("default", "--name", "w-slow",
                    env={"REDISQ_TEST_HEARTBEAT": "20", "REDISQ_TEST_LEASE": "60"})
    until(lambda: worker_field(r, "w-slow", "state") == "idle", w, timeout=20)
    run("rqsuspend")
    until(lambda: worker_field(r, "w-slow", "state") == "suspended", w)
    run("rqresume")
    until(lambda: worker_field(r, "w-slow", "state") == "idle", w)
    assert jobs.add.delay(2, 2).get(timeout=10) == 4


def test_a_worker_started_while_suspended_takes_nothing(r, worker_proc):
    run("rqsuspend")
    job = jobs.add.delay(1, 2)
    w = worker_proc("default", "--name", "w-late", env=FAST)
    until(lambda: worker_field(r, "w-late", "state") == "suspended", w, timeout=20)
    beat = last_beat(r, "w-late")
    until(lambda: last_beat(r, "w-late") > beat, w)
    assert job.status == "queued"
    run("rqresume")
    assert job.get(timeout=10) == 3


def test_suspend_with_duration_expires(r):
    out, _ = run("rqsuspend", "--duration", "30")
    assert out.startswith("workers suspended for 30 s")
    assert 0 < r.pttl(suspended_key("redisq")) <= 30_000
    data = stats()
    assert data["suspended"] is True and 0 < data["suspended_for"] <= 30
    assert run("rqresume")[0].strip() == "workers resumed"
    assert run("rqresume")[0].strip() == "workers were not suspended"
    for bad in ("0", "nan", "inf", "1e20"):  # Redis would refuse the last as an expiry
        with pytest.raises(CommandError, match="--duration must be a positive"):
            run("rqsuspend", "--duration", bad)


def test_rqworker_refuses_schedules_that_share_a_name_with_a_message(r, settings):
    settings.REDISQ = {**settings.REDISQ, "CRON": [
        {"cron": "0 3 * * *", "func": "tests.jobs.record", "args": ["site-a"]},
        {"cron": "0 3 * * *", "func": "tests.jobs.record", "args": ["site-b"]},
    ]}
    with pytest.raises(CommandError, match=r"periodic jobs: .* share the name"):
        call_command("rqworker", "default", "--burst", verbosity=0)


@pytest.mark.parametrize("entry, fragment", [
    ({"cron": "0 3 * * *", "func": "tests.jobs.no_such_job"}, "no registered @job function"),
    ({"cron": "0 3 * * *", "func": "tests.jobs.add", "args": [1]}, "which it does not take"),
])
def test_rqworker_refuses_a_schedule_that_could_never_run(r, settings, entry, fragment):
    # Each tick would fail; manage.py check cannot tell (it imports no job module).
    settings.REDISQ = {**settings.REDISQ, "CRON": [entry]}
    with pytest.raises(CommandError, match=fragment):
        call_command("rqworker", "default", "--burst", verbosity=0)

