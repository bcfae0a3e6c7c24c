"""Job dependencies: deferred until the jobs it depends on finish; canceled if one fails."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from django_redisq import get_queue
from django_redisq.engine.errors import JobNotFound
from tests import jobs


def burst() -> None:
    call_command("rqworker", "default", "--burst", "--concurrency", "4", verbosity=0)


def test_a_chain_of_three_runs_in_order(r):
    a = jobs.record.delay("a")
    b = jobs.record.using(depends_on=[a]).delay("b")
    c = jobs.record.using(depends_on=[b]).delay("c")
    assert (b.status, c.status) == ("deferred", "deferred")
    q = get_queue("default")
    assert q.counts()["deferred"] == 2 and q.count() == 1
    burst()
    assert [x.decode() for x in r.lrange("test:record", 0, -1)] == ["a", "b", "c"]
    assert (a.status, b.status, c.status) == ("finished",) * 3
    assert q.counts()["deferred"] == 0


def test_a_job_waits_for_all_its_dependencies(r):
    a = jobs.add.delay(1, 1)
    b = jobs.add.delay(2, 2)
    both = jobs.record.using(depends_on=[a, b.id]).delay("after both")
    assert both.status == "deferred"
    burst()
    assert both.status == "finished"


def test_a_failed_dependency_cancels_its_dependents_transitively(r):
    bad = jobs.fail.delay()
    child = jobs.record.using(depends_on=[bad]).delay("child")
    grandchild = jobs.record.using(depends_on=[child]).delay("grandchild")
    burst()
    assert bad.status == "failed"
    assert (child.status, grandchild.status) == ("canceled", "canceled")
    assert "dependency" in child.record.error["message"]
    assert r.lrange("test:record", 0, -1) == []


def test_run_anyway_runs_after_a_failed_dependency(r):
    bad = jobs.fail.delay()
    cleanup = jobs.record.using(depends_on=[bad], run_anyway=True).delay("cleanup")
    burst()
    assert cleanup.status == "finished"


def test_depending_on_an_already_finished_job_queues_at_once(r):
    a = jobs.add.delay(1, 1)
    burst()
    b = jobs.add.using(depends_on=[a]).delay(2, 2)
    assert b.status == "queued"


def test_depending_on_an_already_failed_job_cancels_at_once(r):
    bad = jobs.fail.delay()
    burst()
    child = jobs.add.using(depends_on=[bad]).delay(1, 1)
    assert child.status == "canceled"


def test_canceling_or_deleting_a_dependency_cancels_the_dependent(r):
    a = jobs.add.delay(1, 1)
    b = jobs.add.using(depends_on=[a]).delay(2, 2)
    a.cancel()
    assert b.status == "canceled"
    c = jobs.add.delay(1, 1)
    d = jobs.add.using(depends_on=[c]).delay(2, 2)
    get_queue("default").delete(c.id)
    assert d.status == "canceled"


def test_cancel_a_deferred_job(r):
    a = jobs.add.delay(1, 1)
    b = jobs.record.using(depends_on=[a]).delay("never")
    assert b.cancel() == "canceled"
    burst()
    assert b.status == "canceled"
    assert r.lrange("test:record", 0, -1) == []


def test_unknown_dependency_raises_and_cross_queue_dependency_is_refused(r):
    with pytest.raises(JobNotFound, match="does not exist"):
        jobs.add.using(depends_on=["no-such-job"]).delay(1, 1)
    high = jobs.async_add.delay(1, 1)
    with pytest.raises(ValueError, match="own queue"):
        jobs.add.using(depends_on=[high]).delay(1, 1)


# -- one dependency named twice ----------------------------------------------------------------
def test_a_dependency_named_twice_counts_once(r):
    a = jobs.add.delay(1, 1)
    b = jobs.record.using(depends_on=[a, a.id]).delay("b")
    assert get_queue("default").prepare(
        "tests.jobs.add", (1, 1), depends_on=[a, a.id, "x", a]).call.args[4].endswith(
        f'["{a.id}", "x"]]')
    burst()
    assert b.status == "finished"


def test_the_enqueue_script_counts_a_repeated_dependency_once(r):
    """The script dedupes too, for callers that build the call themselves."""
    from django_redisq.engine.queue import enqueue_options

    q = get_queue("default")
    a = jobs.add.delay(1, 1)
    c = jobs.add.delay(2, 2)
    p = q.prepare("tests.jobs.record", ("b",), depends_on=[a])
    p.call.args[4] = enqueue_options(0, 0, None, [a.id, c.id, a.id])
    b = p.send()
    assert b.status == "deferred"
    assert r.hget(q.keys.job(b.id), "pending") == b"2"
    burst()
    assert b.status == "finished"


# -- a link left by an earlier job of the same id ----------------------------------------------
def _claim_first(q, worker="manual"):
    from django_redisq.engine.ops import one

    _now, claimed = q.run(one(q.claim_call(worker, 1, 30_000)))
    return [job_id.decode() for job_id, _fields in claimed]


def _end(q, job_id, how):
    from django_redisq.engine.ops import one

    if how == "finish":
        assert q.run(one(q.finish_call(job_id, "manual", b"2"))) == 1
    else:
        assert q.run(one(q.fail_call(job_id, "manual", '{"type": "E", "message": "m"}',
                                     "[]"))) == b"failed"


@pytest.mark.parametrize("how", ["finish", "fail"])
@pytest.mark.parametrize("gone", ["cancel", "delete", "dependency failed"])
def test_a_deferred_job_that_ended_leaves_no_link_to_a_later_job_of_its_id(r, gone, how):
    """B waited on A and ended without running; B's id enqueued again on X only must not be
    released or canceled by A's end."""
    q = get_queue("default")
    bad = jobs.fail.using(job_id="BAD").delay()
    a = jobs.add.using(job_id="A").delay(1, 1)
    jobs.add.using(job_id="B", depends_on=[a, bad]).delay(2, 2)
    if gone == "cancel":
        assert q.cancel("B") == "canceled"
    elif gone == "delete":
        assert q.delete("B") == 1
    else:
        assert _claim_first(q) == ["BAD"]
        _end(q, "BAD", "fail")
        assert q.job_status("B") == "canceled"
    assert r.smembers(f"{q.keys.deps_prefix}A") == set()
    x = jobs.add.using(job_id="X").delay(3, 3)
    b2 = jobs.add.using(job_id="B", depends_on=[x]).delay(3, 3)
    assert b2.status == "deferred"
    if gone != "dependency failed":
        assert _claim_first(q) == ["BAD"]
    assert _claim_first(q) == ["A"]
    _end(q, "A", how)
    assert b2.status == "deferred"
    assert q.fetch_record("B").error is None
    burst()
    assert (x.status, b2.status, b2.result) == ("finished", "finished", 6)


def test_a_dependency_ending_acts_only_on_dependents_that_wait_for_it(r):
    """A link left in a dependents set by any means (an earlier version, a hand edit) is
    checked against the dependent's own list of the jobs it waits for."""
    q = get_queue("default")
    a = jobs.add.using(job_id="A").delay(1, 1)
    x = jobs.add.using(job_id="X").delay(2, 2)
    b = jobs.add.using(job_id="B", depends_on=[x]).delay(3, 3)
    r.sadd(f"{q.keys.deps_prefix}A", "B")
    r.hset(q.keys.job("A"), "deps", "1")
    assert _claim_first(q) == ["A"]
    _end(q, "A", "fail")
    assert (a.status, b.status) == ("failed", "deferred")
    burst()
    assert (x.status, b.status) == ("finished", "finished")
