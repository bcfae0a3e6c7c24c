"""Redis Cluster: queues on three different masters of a real cluster started for this module.

Every key of a queue carries the ``{queue}`` hash tag, so each script runs on the queue's node;
the worker's wake-ups are classic Pub/Sub, which a cluster broadcasts to every node.
Time budget: about 25 s (cluster start ~3 s, two workers ~2 s each, jobs, admin pages, a node
restart).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from django_redisq import conf, get_queue
from django_redisq.engine.keys import workers_key
from tests import jobs
from tests.conftest import wait_for
from tests.infra import Cluster

pytestmark = pytest.mark.django_db

CANDIDATES = ["default", "alpha", "low", "beta", "gamma", "delta", "c1", "c2", "c3", "q1", "q2"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def spread(cluster: Cluster) -> Iterator[tuple[list[str], dict[str, int], dict[str, Any]]]:
    """Three queue names whose slots live on three different nodes, configured as CLUSTER
    queues here and (as JSON) for worker subprocesses."""
    by_node: dict[int, str] = {}
    for name in CANDIDATES:
        by_node.setdefault(cluster.node_of(f"{{{name}}}"), name)
    assert len(by_node) == 3, by_node
    names = list(by_node.values())
    node_of = {name: port for port, name in by_node.items()}
    nodes = [f"127.0.0.1:{p}" for _h, p in cluster.addresses]
    queues = {name: {"CLUSTER": {"NODES": nodes}} for name in names}
    with override_settings(REDISQ={**settings.REDISQ, "QUEUES": queues}):
        yield names, node_of, queues
    for n in cluster.nodes:
        n.client().flushall()
    conf.clear_cache()


def test_enqueue_work_retry_schedule_and_admin_across_nodes(spread, worker_proc, admin_client,
                                                             r, cluster):
    names, node_of, queues = spread
    w = worker_proc(*names, "--concurrency", "8",
                    env={"REDISQ_TEST_QUEUES": json.dumps(queues)})
    # Wait until the worker is idle and registered: from here on, only Pub/Sub wake-ups (sent
    # from each queue's own node) make it claim.
    first = get_queue(names[0])
    wait_for(lambda: first.run(_zcard(workers_key(first.prefix))) == 1, timeout=20,
             message=lambda: f"the worker did not register:\n{w.output()}")

    handles: dict[str, list[Any]] = {}
    for i, name in enumerate(names):
        now = jobs.add.using(queue=name, on_commit=False)
        handles[name] = [now.delay(n, i) for n in range(5)]
        handles[name].append(jobs.add.using(queue=name, delay=0.3, on_commit=False).delay(i, i))
        handles[name].append(jobs.flaky_with_retry.using(queue=name, on_commit=False)
                             .delay(f"flaky:{name}", 2))
    failing = jobs.fail.using(queue=names[1], on_commit=False).delay("on purpose")
    batch = get_queue(names[2]).enqueue_many([("tests.jobs.add", (40, 2), {})] * 3)

    every = [h for hs in handles.values() for h in hs] + batch
    wait_for(lambda: all(h.status == "finished" for h in every) and failing.status == "failed",
             timeout=30, message=lambda: f"jobs did not end:\n{w.output()}")
    for i, name in enumerate(names):
        assert [h.result for h in handles[name][:5]] == [n + i for n in range(5)]
        assert handles[name][5].result == 2 * i  # delayed, promoted on its node
        flaky = handles[name][6].refresh()
        assert flaky.result == 3 and flaky.attempts == 3  # retried twice through "scheduled"
    assert [h.result for h in batch] == [42, 42, 42]
    assert "on purpose" in (failing.exc_info or "")

    # Each queue's keys are on the node that owns its hash tag (the client there answers
    # without a MOVED redirect), and Job.get() blocks on a key of that node.
    for name in names:
        node = next(n for n in cluster.nodes if n.port == node_of[name])
        assert node.client().zcard(f"redisq:{{{name}}}:finished") >= 7
    assert handles[names[0]][0].get(timeout=5) == 0

    # Admin listings read every queue from its own node.
    page = admin_client.get(reverse("admin:django_redisq_queue_changelist")).content.decode()
    for name in names:
        row = page.split(f'data-queue="{name}"')[1].split("</tr>")[0]
        assert 'data-state="finished"' in row
        assert "cluster://127.0.0.1:" in page
    jobs_url = reverse("admin:django_redisq_job_changelist")
    for name in names:
        listing = admin_client.get(f"{jobs_url}?queue={name}&state=finished")
        assert listing.status_code == 200
        html = listing.content.decode()
        assert all(h.id in html for h in handles[name])
    failed = admin_client.get(f"{jobs_url}?queue={names[1]}&state=failed").content.decode()
    assert failing.id in failed
    schedules = admin_client.get(reverse("admin:django_redisq_schedule_changelist"))
    assert schedules.status_code == 200
    workers = admin_client.get(reverse("admin:django_redisq_worker_changelist"))
    assert workers.status_code == 200 and ", ".join(names) in workers.content.decode()
    # Requeue from the admin: the failed job goes back on its node's queue and runs again.
    detail = reverse("admin:django_redisq_job_requeue", args=[names[1], failing.id])
    assert admin_client.post(detail).status_code in (200, 302)
    wait_for(lambda: failing.refresh().attempts == 2 and failing.status == "failed",
             timeout=15, message=lambda: f"the requeued job did not run again:\n{w.output()}")
    # Job.get() blocks (BLMOVE on the job's node) until the worker finishes the job.
    later = jobs.add.using(queue=names[2], delay=0.5, on_commit=False).delay(20, 22)
    assert later.get(timeout=15) == 42
    # Enough jobs that the worker's claims grow past one script (50 jobs): several claim
    # scripts then go in one pipeline, which the Cluster client sends to the queue's node.
    many = get_queue(names[2]).enqueue_many([("tests.jobs.add", (40, 2), {})] * 300)
    wait_for(lambda: all(h.status == "finished" for h in many), timeout=30,
             message=lambda: f"the 300 jobs did not all finish:\n{w.output()}")
    assert [h.result for h in many] == [42] * 300
    call_command("rqstats", verbosity=0)
    assert w.proc.poll() is None, w.output()
    assert "Traceback" not in w.output(), w.output()


def _zcard(key: str):  # type: ignore[no-untyped-def]
    from django_redisq.engine.ops import Cmd, one

    return one(Cmd(("ZCARD", key)))


def test_worker_rides_out_the_loss_of_its_subscription_node(spread, worker_proc, r, cluster):
    """The node holding the worker's wake-up subscription dies (the Cluster is down meanwhile:
    no replicas) and comes back empty: the worker subscribes again and serves every queue,
    loading the scripts again on the restarted node."""
    names, _node_of, queues = spread
    w = worker_proc(*names, "--concurrency", "4",
                    env={"REDISQ_TEST_QUEUES": json.dumps(queues),
                         "REDISQ_TEST_HEARTBEAT": "0.5", "REDISQ_TEST_LEASE": "5"})
    first = [jobs.add.using(queue=n, on_commit=False).delay(1, 1) for n in names]
    wait_for(lambda: all(j.status == "finished" for j in first), timeout=20,
             message=lambda: f"jobs did not finish:\n{w.output()}")

    def subscription_node():  # type: ignore[no-untyped-def]
        for n in cluster.nodes:
            if any(c.get("sub") not in (None, "0") for c in n.client().client_list()):
                return n
        return None

    node = wait_for(subscription_node, timeout=10)
    node.kill()
    wait_for(lambda: "Redis error while" in w.output(), timeout=20,
             message=lambda: f"the worker did not notice the lost node:\n{w.output()}")
    node.start()  # its nodes.conf brings back its slots; its data and scripts are gone
    for n in cluster.nodes:
        c = n.client()
        wait_for(lambda c=c: c.cluster("info")["cluster_state"] == "ok", timeout=20)
    # The queue whose slot is on the restarted node starts empty (no persistence).
    after = [jobs.add.using(queue=n, on_commit=False).delay(2, 2) for n in names]
    wait_for(lambda: all(j.status == "finished" for j in after), timeout=30,
             message=lambda: f"jobs after the node came back did not finish:\n{w.output()}")
    # Subscribed again: an idle worker is woken by Pub/Sub alone (it never polls queues).
    assert wait_for(subscription_node, timeout=10) is not None
    woken = [jobs.add.using(queue=n, on_commit=False).delay(3, 3) for n in names]
    wait_for(lambda: all(j.status == "finished" for j in woken), timeout=10,
             message=lambda: f"the idle worker was not woken:\n{w.output()}")
    assert w.proc.poll() is None and "internal task" not in w.output(), w.output()


def test_limits_on_a_cluster_queue(spread, worker_proc, r):
    """Concurrency and rate limits on a queue of a cluster node: their keys carry the queue's
    hash tag, so the claim and finish scripts still touch one slot. Budget: about 3 s."""
    names, _node_of, queues = spread
    name = names[1]
    limited = [jobs.per_user.using(queue=name, on_commit=False).delay(5, "cl", 0.05)
               for _ in range(6)]
    rated = [jobs.rated.using(queue=name, on_commit=False).delay(str(i)) for i in range(13)]
    w = worker_proc(name, "--concurrency", "8", env={"REDISQ_TEST_QUEUES": json.dumps(queues)})
    wait_for(lambda: all(h.status == "finished" for h in limited + rated), timeout=30,
             message=lambda: f"limited jobs did not end:\n{w.output()}")
    assert int(r.get("cl:max")) == 2
    starts = sorted(int(x) for x in r.lrange("test:starts", 0, -1))
    assert starts[-1] - starts[0] >= 250  # 3 jobs past the bucket of 10, 100 ms apart
    assert "Traceback" not in w.output(), w.output()
