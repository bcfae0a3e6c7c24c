"""Concurrency and rate limits: validation at decoration and enqueue, the claim script's
bookkeeping (driven directly, one call at a time), and real workers across processes."""

from __future__ import annotations

import signal
import time

import pytest
from django.core.management import call_command

from django_redisq import get_queue, job
from django_redisq.engine.limits import RateLimit
from django_redisq.engine.ops import one
from tests import jobs
from tests.conftest import wait_for

FAST_LEASE = {"REDISQ_TEST_LEASE": "1", "REDISQ_TEST_HEARTBEAT": "0.2"}


# -- validation ---------------------------------------------------------------------------------
def test_rate_limit_formats():
    assert RateLimit.parse("10/s") == RateLimit(10, 1000, 10)
    assert RateLimit.parse("100/m") == RateLimit(100, 60_000, 2)
    assert RateLimit.parse(" 5 / hour") == RateLimit(5, 3_600_000, 1)
    assert RateLimit.parse("10/s", burst=3).burst == 3
    assert str(RateLimit.parse("100/min")) == "100/m"


@pytest.mark.parametrize("spec", ["10", "10/d", "ten/s", "0/s", "-1/s", "10/s/2", ""])
def test_bad_rate_limit_names_the_format(spec):
    with pytest.raises(ValueError, match=r'"N/s", "N/m" or "N/h"'):
        job(rate_limit=spec)(_plain)


def _plain(user_id: int, text: str = "") -> None:
    pass


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"max_concurrency": 0}, ValueError, "max_concurrency.*positive integer"),
    ({"max_concurrency": True}, ValueError, "max_concurrency.*positive integer"),
    ({"max_concurrency": 1.5}, ValueError, "max_concurrency.*positive integer"),
    ({"limit_key": "k"}, ValueError, "needs max_concurrency or rate_limit"),
    ({"limit_key": "", "max_concurrency": 1}, ValueError, "non-empty string"),
    ({"limit_key": 42, "max_concurrency": 1}, TypeError, "str or a function"),
    ({"limit_key": lambda uid: str(uid), "max_concurrency": 1}, TypeError,
     "takes 'uid', which is not a parameter of the job \\(user_id, text\\)"),
    ({"limit_key": lambda *a: "x", "max_concurrency": 1}, TypeError, r"takes \*a"),
    ({"rate_burst": 5}, ValueError, "rate_burst.*needs rate_limit"),
    ({"rate_limit": "1/s", "rate_burst": 0}, ValueError, "rate_burst must be a positive"),
    ({"rate_limit": 10}, TypeError, "rate_limit must be a string"),
])
def test_bad_limit_options_fail_at_decoration(options, error, match):
    with pytest.raises(error, match=match):
        job(**options)(_plain)


def test_key_function_result_must_be_a_str_at_enqueue(r):
    bad = job(limit_key=lambda user_id: user_id, max_concurrency=1, name="t.bad_key")(_plain)
    with pytest.raises(TypeError, match="returned 7 \\(int\\); it must return a str"):
        bad.delay(7)
    assert get_queue("default").counts()["queued"] == 0  # nothing was sent


def test_key_function_gets_arguments_by_name_with_defaults(r):
    seen = []

    def key(text, user_id):
        seen.append((text, user_id))
        return f"{user_id}:{text}"

    fn = job(limit_key=key, max_concurrency=1, name="t.by_name")(_plain)
    j = fn.delay(3)
    assert seen == [("", 3)]
    rec = r.hgetall(f"redisq:{{default}}:job:{j.id}")
    assert rec[b"limit_key"] == b"3:" and rec[b"max_concurrency"] == b"1"
    takes_all = job(limit_key=lambda **kw: f"u{kw['user_id']}", rate_limit="5/m",
                    name="t.all")(_plain)
    rec = r.hgetall(f"redisq:{{default}}:job:{takes_all.delay(user_id=9).id}")
    assert (rec[b"limit_key"], rec[b"rate_n"], rec[b"rate_ms"], rec[b"rate_burst"]) == (
        b"u9", b"5", b"60000", b"1")


def test_without_limit_key_the_function_name_is_the_key(r):
    fn = job(max_concurrency=3, name="t.whole")(_plain)
    rec = r.hgetall(f"redisq:{{default}}:job:{fn.delay(1).id}")
    assert rec[b"limit_key"] == b"t.whole"


# -- the claim script, driven directly ----------------------------------------------------------
def claim(q, n=10, worker="w1", lease_ms=30_000):
    _at, got = q.run(one(q.claim_call(worker, n, lease_ms)))
    return [i.decode() for i, _f in got]


def finish(q, job_id, worker="w1"):
    assert q.run(one(q.finish_call(job_id, worker, b"null"))) == 1


def test_claim_parks_jobs_over_the_limit_and_takes_the_others(r):
    q = get_queue("default")
    limited = [jobs.per_user.delay(1, "c") for _ in range(4)]
    other = jobs.add.delay(1, 2)
    # One claim of 3: two limited jobs start, two wait, and the unlimited job behind them is
    # claimed in the same call instead of being lost or left for later.
    got = claim(q, 3)
    assert got == [limited[0].id, limited[1].id, other.id]
    assert [j.status for j in limited] == ["started", "started", "deferred", "deferred"]
    assert q.counts()["queued"] == 0 and q.counts()["deferred"] == 2
    assert r.zcard("redisq:{default}:limit:user:1:run") == 2
    assert r.zcard("redisq:{default}:limit:user:1:wait") == 2
    rec = q.fetch_record(limited[2].id)
    assert rec.limit_wait and rec.limit_key == "user:1" and rec.max_concurrency == 2
    assert not q.fetch_record(limited[0].id).limit_wait
    # A newer job of the key queued meanwhile does not overtake the waiters.
    newer = jobs.per_user.delay(1, "c")
    finish(q, limited[0].id)
    assert limited[2].status == "queued"
    assert claim(q, 10) == [limited[2].id]  # reserved for it; the newer one waits
    assert newer.status == "deferred"
    for j in (limited[1], limited[2]):
        finish(q, j.id)
    assert sorted(claim(q, 10)) == sorted([limited[3].id, newer.id])
    for j in (limited[3], newer):
        finish(q, j.id)
    assert r.zcard("redisq:{default}:limit:user:1:run") == 0
    assert r.exists("redisq:{default}:limit:user:1:wait") == 0


def test_keys_are_independent(r):
    q = get_queue("default")
    a = [jobs.per_user.delay(1, "c") for _ in range(3)]
    b = [jobs.per_user.delay(2, "c") for _ in range(3)]
    got = claim(q, 10)
    assert got == [a[0].id, a[1].id, b[0].id, b[1].id]


def test_canceled_or_deleted_waiters_leave_no_trace_and_free_reserved_slots(r):
    q = get_queue("default")
    running, waiting, gone = (jobs.exclusive.delay(n) for n in "abc")
    assert claim(q) == [running.id]
    assert waiting.cancel() == "canceled"
    assert r.zcard("redisq:{default}:limit:one-at-a-time:wait") == 1
    q.delete(gone.id)
    assert r.exists("redisq:{default}:limit:one-at-a-time:wait") == 0
    later = jobs.exclusive.delay("d")
    assert claim(q) == []  # d waits for the slot
    finish(q, running.id)  # d goes back to queued with the slot reserved ...
    assert later.status == "queued"
    later.cancel()  # ... and canceling it there frees the slot
    assert r.zcard("redisq:{default}:limit:one-at-a-time:run") == 0


def test_retry_and_failure_free_the_slot(r):
    q = get_queue("default")
    a, b = jobs.exclusive.delay("a"), jobs.exclusive.delay("b")
    assert claim(q) == [a.id]
    assert q.run(one(q.fail_call(a.id, "w1", "{}", "[]", retry_delay_ms=0))) == b"queued"
    # a is queued again behind b, which had waited: b gets the slot first.
    assert claim(q) == [b.id]
    assert a.status == "deferred"
    assert q.run(one(q.fail_call(b.id, "w1", "{}", "[]"))) == b"failed"
    assert claim(q) == [a.id]


def test_expired_lease_frees_the_slot_through_recovery(r):
    q = get_queue("default")
    a, b = jobs.exclusive.delay("a"), jobs.exclusive.delay("b")
    assert claim(q, lease_ms=1) == [a.id]
    wait_for(lambda: r.zscore("redisq:{default}:started", a.id) < int(r.time()[0]) * 1000)
    recovered, *_ = q.run(one(q.maintain_call(max_deaths=3)))
    assert recovered == 1
    assert b.status == "queued" and a.status == "queued"
    assert claim(q, lease_ms=30_000) == [b.id]  # b had waited longer: it keeps its place


def test_rate_limit_delays_jobs_to_their_own_turn(r):
    q = get_queue("default")
    handles = [jobs.rated.delay(str(i)) for i in range(13)]
    t0 = int(r.time()[0]) * 1000
    got = claim(q, 5)
    assert got == [h.id for h in handles[:5]]  # everything popped goes somewhere
    more = claim(q, 10)
    assert more == [h.id for h in handles[5:10]]  # the bucket holds 10
    assert claim(q, 10) == []  # the other 3 wait, each for its own token
    recs = [q.fetch_record(h.id) for h in handles[10:]]
    assert [x.status for x in recs] == ["scheduled"] * 3
    dues = [x.scheduled_for - t0 for x in recs]
    assert all(0 < d - 100 * (i + 1) < 1100 for i, d in enumerate(dues)), dues
    assert dues[1] - dues[0] == pytest.approx(100, abs=2)
    # Promoted when due, they start without paying again.
    wait_for(lambda: q.run(one(q.maintain_call(3))) and q.counts()["scheduled"] == 0,
             timeout=5)
    assert sorted(claim(q, 10)) == sorted(h.id for h in handles[10:])
    assert all(r.hget(f"redisq:{{default}}:job:{h.id}", "rate_paid") is None for h in handles)


def test_rate_limits_per_key_are_independent(r):
    q = get_queue("default")
    fn = job(limit_key=lambda user_id: f"api:{user_id}", rate_limit="1/s", name="t.per_key")(
        _plain)
    a1, b1, a2, b2 = fn.delay(1), fn.delay(2), fn.delay(1), fn.delay(2)
    assert claim(q) == [a1.id, b1.id]  # one token per key; the second of each waits
    assert (a2.status, b2.status) == ("scheduled", "scheduled")
    k = q.keys
    assert r.exists(k.limit("api:1", "bucket"), k.limit("api:2", "bucket")) == 2


def test_both_limits_on_one_key(r):
    """A job takes its token only once a slot is free; delayed by the rate, it gives the slot
    back, and when due it starts on the token it reserved. Budget: about 1 s."""
    q = get_queue("default")
    fn = job(limit_key="both", max_concurrency=1, rate_limit="1/s", name="t.both")(_plain)
    j1, j2 = fn.delay(1), fn.delay(2)
    assert claim(q) == [j1.id]
    assert j2.status == "deferred"  # waiting for the slot, no token taken
    finish(q, j1.id)
    assert j2.status == "queued"  # woken, with the slot reserved for it
    assert claim(q) == []  # ... but the bucket (1 token) is empty until 1 s after j1
    assert j2.status == "scheduled"
    assert r.zcard(q.keys.limit("both", "run")) == 0  # the slot is given back meanwhile
    wait_for(lambda: q.run(one(q.maintain_call(3))) and j2.status == "queued", timeout=5)
    assert claim(q) == [j2.id]  # on its reserved token: no second delay


def test_bucket_expires_once_full_again(r):
    q = get_queue("default")
    jobs.rated.delay("x")
    claim(q)
    ttl = r.pttl("redisq:{default}:limit:tests.jobs.rated:bucket")
    assert 0 < ttl <= 1100  # 1 token at 10/s refills in 100 ms, plus a second of slack


# -- real workers -------------------------------------------------------------------------------
def test_concurrency_limit_holds_across_two_workers(r, worker_proc):
    """Acceptance: 20 jobs of one key with max_concurrency=2 on 2 workers (10 slots each)
    never run more than 2 at once, and all finish. Budget: about 1 s of jobs, 60 s bound."""
    handles = [jobs.per_user.delay(7, "lim", 0.05) for _ in range(20)]
    r.config_resetstat()
    t0 = time.monotonic()
    workers = [worker_proc("default", "--concurrency", "10") for _ in range(2)]
    wait_for(lambda: all(h.status == "finished" for h in handles), timeout=60,
             message="\n".join(w.output() for w in workers))
    wall = time.monotonic() - t0
    assert int(r.get("lim:max")) == 2
    ran_on = {h.refresh().record.worker for h in handles}
    calls = r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    print(f"max concurrency 2 of 2; 20 jobs in {wall:.2f} s on {len(ran_on)} workers; "
          f"{calls} script calls")
    # Waiting costs no polling: a claim that parks, a wake-up per finish, a few claims each.
    assert calls < 20 * 10
    assert r.zcard("redisq:{default}:limit:user:7:run") == 0
    assert r.exists("redisq:{default}:limit:user:7:wait") == 0


def test_waiting_jobs_hold_no_worker_slot(r, worker_proc):
    """With 2 slots and 5 jobs of a key limited to 1 queued first, unlimited jobs still run."""
    blocked = [jobs.exclusive.delay(f"x{i}") for i in range(5)]
    quick = [jobs.add.delay(i, i) for i in range(5)]
    w = worker_proc("default", "--concurrency", "2")
    wait_for(lambda: all(h.status == "finished" for h in quick), timeout=20, message=w.output())
    assert [h.status for h in blocked].count("started") == 1
    for i in range(5):
        r.rpush(f"x{i}:go", "1")
    wait_for(lambda: all(h.status == "finished" for h in blocked), timeout=20,
             message=w.output())
    assert r.llen("test:exclusive") == 5


def test_a_sigkilled_worker_does_not_leak_its_slot(r, worker_proc):
    first_job, second_job = jobs.exclusive.delay("k1"), jobs.exclusive.delay("k2")
    w1 = worker_proc("default", env=FAST_LEASE)
    wait_for(lambda: r.llen("test:exclusive") == 1, timeout=20, message=w1.output())
    assert second_job.status == "deferred"
    w1.signal(signal.SIGKILL)
    w1.wait()
    r.rpush("k1:go", "1")
    r.rpush("k2:go", "1")
    w2 = worker_proc("default", env=FAST_LEASE)
    # The dead worker's lease expires (1 s), recovery frees its slot and both jobs run.
    wait_for(lambda: first_job.status == "finished" and second_job.status == "finished",
             timeout=30, message=w2.output())
    assert r.zcard("redisq:{default}:limit:one-at-a-time:run") == 0
    assert "put back" in w2.output()


def test_rate_limit_holds_across_two_workers(r, worker_proc):
    """Acceptance: 50 jobs at "10/s" (bucket of 10) on 2 workers: no 1 s window holds more
    than 10 + 10 starts, none fails, and the rate is really applied (the 40 jobs past the
    bucket take about 4 s). Budget: about 4 s of jobs, 60 s bound."""
    handles = [jobs.rated.delay(str(i)) for i in range(50)]
    r.config_resetstat()
    workers = [worker_proc("default", "--concurrency", "10") for _ in range(2)]
    wait_for(lambda: r.llen("test:starts") == 50, timeout=60,
             message="\n".join(w.output() for w in workers))
    wait_for(lambda: all(h.status == "finished" for h in handles), timeout=20)
    calls = r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)

    def busiest(times: list[int]) -> int:
        return max(sum(1 for t in times if s <= t < s + 1000) for s in times)

    # As the job saw it (Redis TIME in the job), and as the claim recorded it (started_at).
    starts = sorted(int(x) for x in r.lrange("test:starts", 0, -1))
    claims = sorted(h.refresh().record.started_at for h in handles)
    span = (starts[-1] - starts[0]) / 1000
    print(f"rate 10/s, burst 10: busiest 1 s window {busiest(starts)} starts "
          f"({busiest(claims)} claims); span {span:.2f} s; {calls} script calls for 50 jobs")
    assert busiest(claims) <= 20
    assert busiest(starts) <= 20
    assert 3.5 <= span <= 10
    # No tight polling: each job costs a handful of script calls (claim, finish, a park and
    # a promotion), not one per retry.
    assert calls < 50 * 8


def test_burst_worker_runs_limited_jobs(r):
    handles = [jobs.per_user.delay(3, "b", 0.01) for _ in range(6)]
    call_command("rqworker", "default", "--burst", "--concurrency", "4", verbosity=0)
    assert all(h.status == "finished" for h in handles)
    assert int(r.get("b:max")) <= 2


def test_periodic_jobs_keep_their_functions_limits(r, settings):
    import asyncio
    from datetime import datetime, timezone

    from django_redisq.engine.scheduler import CronScheduler
    from django_redisq.schedules import load_schedules

    settings.REDISQ = {**settings.REDISQ, "CRON": [
        {"every": 60, "func": "tests.jobs.exclusive", "args": ["tick"]}]}
    from django_redisq.conf import clear_cache

    clear_cache()
    try:
        (schedule,) = [s for s in load_schedules() if s.func == "tests.jobs.exclusive"]
        assert schedule.limits is jobs.exclusive.limits
        q = get_queue("default")
        cron = CronScheduler([schedule], {"default": q}, "s1", 1.0)
        asyncio.run(cron.tick(datetime.now(timezone.utc)))
        (rec,) = q.jobs("queued")
        assert (rec.limit_key, rec.max_concurrency) == ("one-at-a-time", 1)
    finally:
        clear_cache()


# -- random operation sequences against the invariants ------------------------------------------
def _check_invariants(r, q):
    k = q.keys
    status_of = {}
    for state in ("queued", "scheduled", "started", "deferred", "finished", "failed",
                  "canceled"):
        for raw in r.zrange(k.state(state), 0, -1):
            job_id = raw.decode()
            assert job_id not in status_of, f"{job_id} in {status_of[job_id]} and {state}"
            status_of[job_id] = state
            st = r.hget(k.job(job_id), "status")
            if st is not None:  # a terminal job with result_ttl 0 has no hash
                assert st.decode() == state, (job_id, st, state)
    for uid in (1, 2):
        run = r.zrange(k.limit(f"user:{uid}", "run"), 0, -1)
        started = [i for i, s in status_of.items() if s == "started"
                   and r.hget(k.job(i), "limit_key") == f"user:{uid}".encode()]
        assert len(run) <= 2 and len(started) <= 2, (uid, run, started)
        waiting = {m.decode() for m in r.zrange(k.limit(f"user:{uid}", "wait"), 0, -1)}
        for i, s in status_of.items():
            h = r.hmget(k.job(i), "limit_key", "limit_wait")
            if s == "deferred" and h[0] == f"user:{uid}".encode():
                assert h[1] == b"1" and i in waiting, i


@pytest.mark.parametrize("seed", range(12))
def test_random_operations_keep_the_limit_and_lose_nothing(r, seed):
    """Claims by two workers, finishes, retries, failures, put-backs, cancels, deletes and
    worker deaths in random order: at most 2 jobs of a key ever start at once, every job is
    in exactly one state, and in the end every job still waiting runs (nothing is stuck)."""
    import random

    rnd = random.Random(seed)
    q = get_queue("default")
    k = q.keys
    handles = []
    running: dict[str, str] = {}  # job id -> worker
    for _ in range(60):
        op = rnd.choice(["enqueue"] * 3 + ["claim"] * 3 + ["finish"] * 2
                        + ["retry", "fail", "release", "cancel", "delete", "die"])
        if op == "enqueue" or not handles:
            handles.append(jobs.per_user.delay(rnd.choice((1, 2)), "c") if rnd.random() < 0.8
                           else jobs.add.delay(1, 1))
        elif op == "claim":
            worker = rnd.choice(("w1", "w2"))
            for job_id in claim(q, rnd.randint(1, 4), worker):
                running[job_id] = worker
        elif op in ("finish", "retry", "fail", "release") and running:
            job_id = rnd.choice(sorted(running))
            worker = running.pop(job_id)
            if op == "finish":
                q.run(one(q.finish_call(job_id, worker, b"null")))
            elif op == "release":  # the worker shut down and put it back
                q.run(one(q.release_call(job_id, worker)))
            else:
                q.run(one(q.fail_call(job_id, worker, "{}", "[]",
                                      retry_delay_ms=0 if op == "retry" else -1)))
        elif op in ("cancel", "delete"):
            job_id = rnd.choice(handles).id
            if op == "cancel":
                q.cancel(job_id)
            else:
                q.delete(job_id)
                running.pop(job_id, None)
        elif op == "die":
            worker = rnd.choice(("w1", "w2"))
            for job_id in [i for i, w in running.items() if w == worker]:
                # Time passes for this worker's leases only: both deadlines run out.
                r.zadd(k.state("started"), {job_id: 1}, xx=True)
                key = r.hget(k.job(job_id), "limit_key")
                if key:
                    r.zadd(k.limit(key.decode(), "run"), {job_id: 1}, xx=True)
                del running[job_id]
            q.run(one(q.maintain_call(max_deaths=3)))
        _check_invariants(r, q)
    # Drain: what was canceled while running ends when its worker reports; then every job
    # still waiting must get its turn.
    for job_id, worker in running.items():
        q.run(one(q.finish_call(job_id, worker, b"null")))
    for _ in range(100):
        got = claim(q, 3, "w1")
        for job_id in got:
            q.run(one(q.finish_call(job_id, "w1", b"null")))
        _check_invariants(r, q)
        if not got:
            break
    counts = q.counts()
    assert counts["queued"] == counts["deferred"] == counts["started"] == 0, counts
    for uid in (1, 2):
        assert r.zcard(k.limit(f"user:{uid}", "run")) == 0
        assert r.exists(k.limit(f"user:{uid}", "wait")) == 0


def test_scripts_find_limit_keys_under_any_prefix(r, redis_server):
    """The scripts derive limit and state keys from the job prefix: check them against
    QueueKeys for a prefix with colons of its own."""
    import inspect as _inspect

    from django_redisq.engine import Queue, RedisConnection
    from django_redisq.engine.limits import make_limits

    q = Queue("lim-q", RedisConnection(redis_server.url), prefix="my:app")
    limits = make_limits("f", _inspect.signature(_plain), limit_key="k", max_concurrency=1)
    a, b = (q.enqueue("tests.jobs.add", [i], limits=limits) for i in range(2))
    assert claim(q) == [a.id]
    k = q.keys
    assert r.zrange(k.limit("k", "run"), 0, -1) == [a.id.encode()]
    assert r.zrange(k.limit("k", "wait"), 0, -1) == [b.id.encode()]
    assert r.zrange(k.state("deferred"), 0, -1) == [b.id.encode()]
    finish(q, a.id)
    assert r.zrange(k.state("queued"), 0, -1) == [b.id.encode()]
    assert r.zrange(k.limit("k", "run"), 0, -1) == [b.id.encode()]  # reserved for b
    assert sorted(x.decode() for x in r.keys("*")) == sorted([
        k.job(a.id), k.job(b.id), k.state("queued"), k.state("finished"), k.seq,
        k.limit("k", "run")])


@pytest.mark.parametrize("fields", [
    {"max_concurrency": "0"}, {"max_concurrency": "nan"}, {"max_concurrency": "-inf"},
    {"rate_n": "inf", "rate_ms": "0", "rate_burst": "nan"}, {"rate_n": "nan"},
    {"rate_n": "1e308", "rate_ms": "1e308", "rate_burst": "1e308"},
])
def test_garbled_limit_fields_neither_fail_the_claim_nor_hide_the_job(r, fields):
    q = get_queue("default")
    j = jobs.exclusive.delay("g")
    r.hset(q.keys.job(j.id), mapping=fields)
    assert claim(q) == [j.id]
    finish(q, j.id)
    rec = q.fetch_record(j.id)  # and the record still decodes
    assert rec is not None and rec.status == "finished"
