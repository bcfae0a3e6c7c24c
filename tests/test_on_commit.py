"""ENQUEUE_ON_COMMIT: jobs are sent after the surrounding transaction commits, never on rollback.

These use real transactions (``transaction=True``), not the test-case wrapper transaction.
"""

from __future__ import annotations

import pytest
from django.db import transaction

from django_redisq import get_queue
from tests import jobs
from tests.testapp.models import Note

pytestmark = pytest.mark.django_db(transaction=True)


def test_job_is_sent_after_commit(r):
    with transaction.atomic():
        Note.objects.create(text="hello")
        j = jobs.add.delay(1, 2)
        assert r.dbsize() == 0  # nothing in Redis while the transaction is open
        assert j.status is None
    assert j.status == "queued"
    assert get_queue("default").count() == 1


def test_rollback_sends_nothing(r):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        jobs.add.delay(1, 2)
        raise Boom
    assert r.dbsize() == 0


def test_nested_savepoint_rollback_drops_only_its_jobs(r):
    with transaction.atomic():
        kept = jobs.add.delay(1, 2)
        try:
            with transaction.atomic():
                jobs.add.delay(3, 4)
                raise RuntimeError
        except RuntimeError:
            pass
    assert kept.status == "queued"
    assert get_queue("default").count() == 1


def test_outside_a_transaction_the_job_is_sent_at_once(r):
    j = jobs.add.delay(1, 2)
    assert j.status == "queued"


def test_on_commit_can_be_turned_off_per_call(r):
    with transaction.atomic():
        j = jobs.add.using(on_commit=False).delay(1, 2)
        assert j.status == "queued"


def test_argument_errors_raise_inside_the_transaction(r):
    with pytest.raises(TypeError), transaction.atomic():
        jobs.add.delay(1, object())
    assert r.dbsize() == 0
