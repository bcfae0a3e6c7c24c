"""Hostile input: whatever is written into Redis, a worker never runs it, never imports a module
because of it, never crashes, and fails the job with a reason; pickle stays off unless chosen.

The property tests write job hashes straight into Redis (HSET, then ZADD into ``queued``) and
run the engine's real worker (``engine.worker.Worker``: claim script, decoding, execution,
outcome scripts) in this process in burst mode, 500 generated cases per property. A few cases
go through a real ``rqworker`` subprocess too.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from django_redisq import conf, get_queue
from django_redisq.engine.keys import ACTIVE_STATES, TERMINAL_STATES
from django_redisq.engine.queue import PayloadTooLarge
from django_redisq.engine.worker import Worker, WorkerOptions
from tests import jobs

CASES = hsettings(max_examples=500, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow])

#: Real modules that nothing in the test run imports: a payload naming them must not either.
UNIMPORTED = ("antigravity", "this", "tkinter", "xmlrpc.server", "turtle", "webbrowser",
              "smtplib", "ftplib", "imaplib", "pydoc")
#: Names of dangerous callables, and unregistered names shaped like paths.
INJECTED = ("os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "os.remove",
            "shutil.rmtree", "importlib.import_module", "pickle.loads", "tests.jobs",
            "tests.jobs.add.__globals__", "tests.jobs._redis", "django_redisq.conf.get_queue",
            *(f"{m}.main" for m in UNIMPORTED), *UNIMPORTED)


def base_hash(job_id: str, **fields: str | bytes) -> dict[str, str | bytes]:
    """A valid job hash for ``tests.jobs.add(1, 2)``, with ``fields`` replacing its own."""
    h: dict[str, str | bytes] = {
        "v": "1", "id": job_id, "queue": "default", "func": "tests.jobs.add", "ser": "json",
        "payload": "[[1,2],{}]", "status": "queued", "priority": "0", "timeout": "10",
        "result_ttl": "60000", "failure_ttl": "60000", "attempts": "0",
    }
    h.update(fields)
    return h


def inject(r, job_id: str, fields: dict[str, str | bytes], state: str = "queued",
           score: float = 1) -> None:
    q = get_queue("default")
    if fields:
        r.hset(q.keys.job(job_id), mapping=fields)
    r.zadd(q.keys.state(state), {job_id: score})


def run_worker() -> Worker:
    """The engine's worker, in burst mode, in this process, until the queue is drained."""
    worker = Worker([get_queue("default")],
                    options=WorkerOptions(burst=True, scheduler=False, concurrency=4,
                                          heartbeat=5, lease=30))
    # A burst worker that does not drain (a job it cannot see, a wedged loop) fails here.
    code = asyncio.run(asyncio.wait_for(worker.run(), 30))
    assert code == 0, "the worker stopped on an internal error"
    return worker


def state_of(r, job_id: str) -> str | None:
    """The one registry that holds the job, checking it is in no other."""
    q = get_queue("default")
    held = [s for s in (*ACTIVE_STATES, *TERMINAL_STATES)
            if r.zscore(q.keys.state(s), job_id) is not None]
    assert len(held) <= 1, f"job {job_id} is in {held}"
    return held[0] if held else None


def error_of(r, job_id: str) -> dict[str, str]:
    raw = r.hget(get_queue("default").keys.job(job_id), "error")
    assert raw, f"job {job_id} has no error recorded"
    return json.loads(raw)  # type: ignore[no-any-return]


def assert_failed(r, job_id: str, *reasons: str) -> str:
    assert state_of(r, job_id) == "failed"
    status = r.hget(get_queue("default").keys.job(job_id), "status")
    assert status == b"failed"
    message = error_of(r, job_id)["message"]
    assert any(reason in message for reason in reasons), message
    return message


def _expiry(r, state: str, job_id: str) -> float:
    return float(r.zscore(get_queue("default").keys.state(state), job_id))


def _server_ms(r) -> int:
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def run_worker_with_a_good_job() -> None:
    """Run the worker with a good job queued behind the bad ones: it runs, so the worker went
    on serving after them."""
    good = jobs.add.delay(2, 3)
    run_worker()
    assert good.result == 5


@pytest.fixture
def fresh(r):
    """Empty the database before each generated case (the ``r`` fixture does it per test)."""
    def reset():
        r.flushdb()
        return r
    return reset


# -- generated values -------------------------------------------------------------------------
NUMBERISH = st.sampled_from(["inf", "-inf", "nan", "1e400", "-1e400", "1.5", "-0.5", "0x10",
                             " 7", "", "0", "-1", "99999999999999999999999", "1e15", "abc",
                             "1_000", "١٢", "\x00", "[]", "{}", "null", "true"])
JUNK = st.one_of(NUMBERISH, st.text(max_size=40), st.binary(max_size=40),
                 st.integers().map(str), st.floats().map(repr))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=12)
DEEP_JSON = st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n + "]" * n)


def _not_a_call(value: object) -> bool:
    return not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], list)
                and isinstance(value[1], dict))


PAYLOADS = st.one_of(
    # valid JSON of the wrong shape
    JSON_VALUES.filter(_not_a_call).map(lambda v: json.dumps(v)),
    # truncated JSON: a strict prefix of an array is never valid
    st.tuples(JSON_VALUES, JSON_VALUES).map(lambda t: json.dumps([[t[0]], {"k": t[1]}]))
    .flatmap(lambda s: st.integers(min_value=0, max_value=len(s) - 1).map(lambda n: s[:n])),
    # bytes that are not UTF-8 / not JSON at all, and pickles
    st.binary(max_size=60).filter(lambda b: not b.strip().startswith(b"[")),
    st.just(pickle.dumps(([1, 2], {}))),
    DEEP_JSON,
)

FIELDS = ("v", "id", "queue", "func", "status", "ser", "payload", "priority", "timeout",
          "retry", "attempts", "deaths", "errors", "error", "meta", "enqueued_at",
          "started_at", "scheduled_for", "worker", "cancel", "w", "pending")


# -- properties -------------------------------------------------------------------------------
@CASES
@given(overrides=st.dictionaries(st.sampled_from(FIELDS), JUNK | JSON_VALUES.map(json.dumps),
                                 min_size=1, max_size=5),
       dropped=st.sets(st.sampled_from(FIELDS), max_size=3),
       extra=st.dictionaries(st.text(min_size=1, max_size=8), JUNK, max_size=2),
       where=st.sampled_from(["queued", "started", "scheduled"]))
def test_malformed_hashes_never_crash_the_worker_or_stick(fresh, overrides, dropped, extra,
                                                         where):
    """Any field garbled, dropped or added, in any active registry (an expired lease in
    ``started``, a due time in ``scheduled``): the job ends in one terminal registry, or,
    when it ran and its result TTL says keep nothing, is gone; never stuck, never a crash."""
    r = fresh()
    fields = {**base_hash("bad"), **overrides, **extra}
    for name in dropped:
        fields.pop(name, None)
    inject(r, "bad", fields, state=where, score=0)
    run_worker_with_a_good_job()
    state = state_of(r, "bad")
    assert state not in ACTIVE_STATES, f"job left {state}"
    key = get_queue("default").keys.job("bad")
    if state is None:
        # Terminal with TTL 0 (or never a job: a claim skips ids without a hash).
        assert not r.exists(key) or r.hget(key, "status") in (b"finished", b"canceled")
    else:
        assert r.hget(key, "status") == state.encode()
        if state == "failed":
            assert error_of(r, "bad")["message"]


@CASES
@given(ttl_field=st.sampled_from(["result_ttl", "failure_ttl", "priority", "timeout",
                                  "attempts"]),
       value=NUMBERISH | JUNK,
       func=st.sampled_from(["tests.jobs.add", "tests.jobs.fail", "tests.jobs.missing"]))
def test_garbage_numbers_never_fail_a_script_half_way(fresh, ttl_field, value, func):
    """TTLs, priorities, timeouts and attempt counts that are not numbers, or are fractions,
    'inf', 'nan', '1e400' or huge: every script still runs to its end (Redis would keep a
    failed script's earlier writes and the job would be in no registry)."""
    r = fresh()
    inject(r, "bad", base_hash("bad", func=func, **{ttl_field: value}))
    # The same hash recovered from a dead worker, and promoted from the schedule.
    inject(r, "bad2", base_hash("bad2", func=func, status="started", **{ttl_field: value}),
           state="started", score=0)
    inject(r, "bad3", base_hash("bad3", func=func, status="scheduled", **{ttl_field: value}),
           state="scheduled", score=0)
    run_worker_with_a_good_job()
    for job_id in ("bad", "bad2", "bad3"):
        state = state_of(r, job_id)
        assert state not in ACTIVE_STATES, f"{job_id} left {state}"
        status = r.hget(get_queue("default").keys.job(job_id), "status")
        if state is None:
            assert status is None or status == b"finished"
        elif status is None:
            # A TTL of a millisecond or so (a legal '1.0'): the hash has expired already and
            # its registry entry is due for the next sweep.
            assert _expiry(r, state, job_id) <= _server_ms(r) + 1000
        else:
            assert status == state.encode()


@CASES
@given(payload=PAYLOADS, ser=st.sampled_from(["json", "pickle", "marshal", ""]))
def test_bad_payloads_fail_with_a_reason(fresh, payload, ser):
    """Truncated or wrong-shaped JSON, binary junk, deep nesting, a pickle, an unknown or
    unchosen serializer: failed, 'cannot decode the job's arguments', the function never ran."""
    r = fresh()
    inject(r, "bad", base_hash("bad", func="tests.jobs.record", payload=payload, ser=ser))
    run_worker_with_a_good_job()
    assert_failed(r, "bad", "cannot decode the job's arguments")
    assert not r.exists("test:record"), "the function ran"


def _reads_as_version_1(value: str | bytes) -> bool:
    try:
        return int(float(value)) == 1
    except (ValueError, OverflowError):
        return False


@CASES
@given(version=st.one_of(st.integers().filter(lambda v: v != 1).map(str), JUNK)
       .filter(lambda v: not _reads_as_version_1(v)))
def test_unknown_schema_versions_fail_with_a_reason(fresh, version):
    r = fresh()
    inject(r, "bad", base_hash("bad", func="tests.jobs.record", v=version,
                               payload='[["ran"],{}]'))
    run_worker_with_a_good_job()
    assert_failed(r, "bad", "schema version", "malformed job hash")
    assert not r.exists("test:record"), "the function ran"


@CASES
@given(func=st.one_of(st.sampled_from(INJECTED),
                      st.lists(st.sampled_from([*UNIMPORTED, "os", "sys", "__import__",
                                                "system", "eval", "..", ""]),
                               min_size=1, max_size=4).map(".".join),
                      st.text(max_size=30)).filter(lambda f: f not in jobs_registered()))
def test_unregistered_and_injected_names_never_run_or_import(fresh, func, tmp_path):
    r = fresh()
    canary = tmp_path / "canary"
    if not _warmed:
        run_worker()  # modules a worker imports lazily on its first run are not the payload's
        _warmed.append(True)
    before = set(sys.modules)
    inject(r, "bad", base_hash("bad", func=func, payload=json.dumps([[f"touch {canary}"], {}])))
    run_worker_with_a_good_job()
    assert_failed(r, "bad", "is not registered in this worker")
    imported = {m for m in set(sys.modules) - before if m.split(".")[0] in
                {n.split(".")[0] for n in (*UNIMPORTED, func.split(".")[0] or "x")}}
    assert not imported, f"the payload made the worker import {imported}"
    assert not canary.exists()


_warmed: list[bool] = []


def jobs_registered() -> set[str]:
    from django_redisq.engine.registry import registry

    return set(registry.names())


def test_none_of_the_canary_modules_is_imported_before():
    """The import checks above mean something only if these modules were not loaded."""
    assert not set(UNIMPORTED) & set(sys.modules)


def test_a_key_of_another_type_is_skipped_and_the_worker_goes_on(r):
    q = get_queue("default")
    r.set(q.keys.job("s"), "x")
    r.rpush(q.keys.job("l"), "x")
    r.sadd(q.keys.job("z"), "x")
    for job_id in ("s", "l", "z", "nokey"):
        r.zadd(q.keys.state("queued"), {job_id: 0})
    run_worker_with_a_good_job()
    assert q.count("queued") == 0 and q.count("started") == 0


def test_a_key_of_another_type_is_no_job_to_cancel_or_requeue(r):
    q = get_queue("default")
    r.set(q.keys.job("s"), "x")
    r.zadd(q.keys.state("failed"), {"s": 0})
    good = jobs.fail.delay()
    call_command("rqworker", "default", "--burst", verbosity=0)
    assert q.cancel("s") is None
    assert q.requeue_failed() == 1  # the real failed job; the string key stops nothing
    assert good.status == "queued"
    assert r.get(q.keys.job("s")) == b"x"


def test_a_hash_whose_id_field_names_another_job_is_failed(r):
    """Outcomes are written by the record's id: a hash naming another id would leave this
    job started forever (and could finish someone else's)."""
    other = jobs.add.delay(1, 1)
    inject(r, "bad", base_hash("bad", id=other.id))
    run_worker()
    assert_failed(r, "bad", "not the id of its key")
    assert other.result == 2


# -- pickle stays off ---------------------------------------------------------------------------
class _Touch:
    def __init__(self, path: Path, how: str) -> None:
        self.path, self.how = path, how

    def __reduce__(self):  # type: ignore[no-untyped-def]
        if self.how == "open":
            return (open, (str(self.path), "w"))
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("how", ["open", "system"])
@pytest.mark.parametrize("ser", ["pickle", "json"])
@pytest.mark.parametrize("field", ["payload", "result"])
def test_a_pickle_is_never_unpickled_on_a_json_queue(r, tmp_path, how, ser, field):
    """With the default JSON serializer, a pickle whose ``__reduce__`` would create a file is
    written into a job, with ``ser`` saying pickle (or json): the worker fails the job with a
    reason, reading the result does not unpickle either, and the file never exists."""
    target = tmp_path / "pwned"
    evil = pickle.dumps(([_Touch(target, how)], {}))
    assert get_queue("default").serializer.name == "json"
    if field == "payload":
        inject(r, "bad", base_hash("bad", ser=ser, payload=evil))
        run_worker()
        message = assert_failed(r, "bad", "cannot decode the job's arguments")
        if ser == "pickle":
            assert "'pickle' serializer, but this queue uses 'json'" in message
    else:
        inject(r, "bad", base_hash("bad", ser=ser, status="finished", result=evil),
               state="finished", score=2**40)
        with pytest.raises(Exception, match="cannot decode the result"):
            get_queue("default").job("bad").result  # noqa: B018 - reading it is the test
    assert not target.exists()


# -- through a real worker process --------------------------------------------------------------
def test_hostile_jobs_through_a_real_worker(r, worker_proc, tmp_path):
    target = tmp_path / "pwned"
    evil = pickle.dumps(([_Touch(target, "system")], {}))
    cases = {
        "system": ({"func": "os.system", "payload": json.dumps([[f"touch {target}"], {}])},
                   "is not registered"),
        "eval": ({"func": "builtins.eval",
                  "payload": json.dumps([[f"open({str(target)!r}, 'w')"], {}])},
                 "is not registered"),
        "import": ({"func": "antigravity.geohash"}, "is not registered"),
        "pickle": ({"ser": "pickle", "payload": evil}, "'pickle' serializer"),
        "truncated": ({"payload": '[[1,2],{"a'}, "cannot decode"),
        "schema": ({"v": "7"}, "schema version 7"),
        "inf": ({"timeout": "inf"}, "malformed job hash"),
        "types": ({"retry": "[1,2]"}, "malformed job hash"),
    }
    for job_id, (fields, _reason) in cases.items():
        inject(r, job_id, base_hash(job_id, **fields))
    good = jobs.add.delay(20, 22)
    w = worker_proc("default", "--burst")
    assert w.wait(60) == 0, w.output()
    for job_id, (_fields, reason) in cases.items():
        assert_failed(r, job_id, reason)
    assert good.result == 42
    assert not target.exists()
    assert "Traceback" not in w.output().replace('"traceback"', "")


# -- MAX_PAYLOAD_BYTES ------------------------------------------------------------------------
@pytest.fixture
def small_limit():
    original = settings.REDISQ
    settings.REDISQ = {**original, "MAX_PAYLOAD_BYTES": 1000}
    conf.clear_cache()
    yield
    settings.REDISQ = original
    conf.clear_cache()


def test_default_payload_limit_is_512_kib(r):
    assert get_queue("default").max_payload_bytes == 512 * 1024
    jobs.echo.delay("x" * (512 * 1024 - 100))  # just under: accepted
    with pytest.raises(PayloadTooLarge) as info:
        jobs.echo.delay("x" * (512 * 1024))
    message = str(info.value)
    assert "tests.jobs.echo" in message and "MAX_PAYLOAD_BYTES limit of 524288" in message
    assert "pass its id" in message
    assert isinstance(info.value, ValueError)


def test_payload_limit_is_enforced_before_anything_reaches_redis(r, small_limit):
    with pytest.raises(PayloadTooLarge, match="over the MAX_PAYLOAD_BYTES limit of 1000"):
        jobs.echo.delay("é" * 600)  # 1,200 bytes of UTF-8
    with pytest.raises(PayloadTooLarge):
        get_queue("default").enqueue_many([("tests.jobs.echo", ["ok"], {}),
                                           ("tests.jobs.echo", ["x" * 2000], {})])
    assert r.dbsize() == 0  # nothing sent, not even the batch's small job
    assert jobs.echo.delay("x" * 900).id
