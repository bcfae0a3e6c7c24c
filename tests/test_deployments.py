"""One worker serving queues that live on two different Redis deployments.

A queue announces new jobs with ``PUBLISH`` on its own deployment, so the worker must listen
on each deployment it serves, not only on its first queue's. Time budget: about 3 s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings

from tests import jobs
from tests.conftest import wait_for
from tests.infra import Server


@pytest.fixture
def second_redis() -> Iterator[Server]:
    server = Server("--save", "", "--appendonly", "no")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_worker_wakes_for_new_jobs_on_each_deployment_it_serves(second_redis, worker_proc, r):
    queues = {"default": {"URL": settings.REDISQ["QUEUES"]["default"]["URL"]},
              "other": {"URL": second_redis.url}}
    # A long heartbeat: within the test, only a wake-up message can make the worker look
    # at a queue again after it found it empty.
    w = worker_proc("default", "other", env={"REDISQ_TEST_QUEUES": json.dumps(queues),
                                             "REDISQ_TEST_HEARTBEAT": "60",
                                             "REDISQ_TEST_LEASE": "300"})

    def recorded() -> list[str]:
        return [x.decode() for x in r.lrange("test:record", 0, -1)]

    with override_settings(REDISQ={**settings.REDISQ, "QUEUES": queues}):
        for queue in ("default", "other"):
            # Except default:1 (which may be taken at start-up), each job is enqueued after
            # the worker found its queue empty, so only that queue's wake channel can make the
            # worker take it.
            for n in (1, 2):
                tag = f"{queue}:{n}"
                jobs.record.using(queue=queue, on_commit=False).delay(tag)
                try:
                    wait_for(lambda tag=tag: tag in recorded(), timeout=15)
                except AssertionError:
                    raise AssertionError(f"job {tag} did not run:\n{w.output()}") from None
    assert recorded() == ["default:1", "default:2", "other:1", "other:2"]
    assert second_redis.client().pubsub_numsub("redisq:{other}:wake") == [
        (b"redisq:{other}:wake", 1)]
