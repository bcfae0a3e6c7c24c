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
