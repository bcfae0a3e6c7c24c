"""Rolling restart: every worker gets SIGTERM in turn while jobs keep arriving.

Three ``rqworker`` processes serve a sync and an async queue while a thread enqueues short
jobs at a steady rate. One at a time, a replacement is started and, once it serves, the old
worker gets SIGTERM: it stops taking jobs, lets its running ones finish, and exits 0. Every
job must run exactly once (runs are recorded in Redis by the jobs themselves) and finish: no
job lost, none run twice. Time budget: ≤ 60 s (about 10-15 s measured).
"""

from __future__ import annotations

import random
import signal
import threading
import time

import redis

from django_redisq import get_queue
from tests.conftest import WorkerProcess, wait_for

JOBS = 2_000
#: Jobs per enqueue batch, and the pause between batches: jobs flow for about 6 s.
BATCH = 20
PAUSE = 0.06
JOB_MS = (10, 200)
WORKERS = 3


def test_rolling_restart_loses_and_repeats_nothing(r, worker_proc, report):
    env = {"REDISQ_AUDIT_URL": get_queue("default").connection.url,
           "REDISQ_TEST_EXTRA_IMPORTS": "tests.chaos.jobs"}
    args = ("high", "default", "--concurrency", "10")
    rng = random.Random(6)
    plan = [(f"j-{i:05d}", "high" if i % 2 else "default", rng.randint(*JOB_MS))
            for i in range(JOBS)]
    t0 = time.monotonic()
    workers = [worker_proc(*args, env=env) for _ in range(WORKERS)]
    for w in workers:
        wait_for(lambda w=w: "serving" in w.output(), timeout=30, message=w.output())

    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            for start in range(0, JOBS, BATCH):
                for qname in ("high", "default"):
                    q = get_queue(qname)
                    func = ("tests.chaos.jobs.chaos_async" if qname == "high"
                            else "tests.chaos.jobs.chaos_sync")
                    q.send_many([q.prepare(func, [ms], {}, job_id=job_id)
                                 for job_id, qn, ms in plan[start:start + BATCH] if qn == qname])
                time.sleep(PAUSE)  # the arrival rate of the workload
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    feeder = threading.Thread(target=enqueue)
    feeder.start()
    exits = []
    running_at_term = []
    try:
        for old in list(workers):
            new = worker_proc(*args, env=env)
            wait_for(lambda new=new: "serving" in new.output(), timeout=30,
                     message=new.output())
            running_at_term.append(_running_jobs(r, old))
            old.signal(signal.SIGTERM)
            exits.append(old.wait(60))
            workers.remove(old)
            workers.append(new)
    finally:
        feeder.join()
    assert not errors, errors
    t_terms = time.monotonic() - t0

    ids = [job_id for job_id, _q, _ms in plan]

    def all_done() -> bool:
        pipe = r.pipeline(transaction=False)
        for job_id, qname, _ms in plan:
            pipe.hget(get_queue(qname).keys.job(job_id), "status")
        return all(s == b"finished" for s in pipe.execute())

    wait_for(all_done, timeout=40, interval=0.2, message="not every job finished")
    wall = time.monotonic() - t0
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.llen(f"runs:{job_id}")
    runs = dict(zip(ids, pipe.execute()))
    lost = [i for i, n in runs.items() if n == 0]
    twice = [i for i, n in runs.items() if n > 1]

    report("jobs", f"{JOBS} (half sync, half async), enqueued while workers restart")
    report("workers restarted by SIGTERM", f"{len(exits)}, exit codes {exits}")
    report("jobs the worker held (running or prefetched) at its SIGTERM", running_at_term)
    report("jobs lost", len(lost))
    report("jobs run more than once", len(twice))
    report("wall time", f"{wall:.1f} s (restarts done after {t_terms:.1f} s)")

    assert exits == [0] * WORKERS
    assert lost == [] and twice == [], (lost[:10], twice[:10])
    assert sum(running_at_term) > 0, "no job was running at any SIGTERM: the test proved nothing"
    assert wall <= 60


def _running_jobs(r: redis.Redis, w: WorkerProcess) -> int:
    """How many jobs the worker holds (running, or claimed ahead), from the started
    registries (server side)."""
    n = 0
    for qname in ("high", "default"):
        q = get_queue(qname)
        started = r.zrange(q.keys.state("started"), 0, -1)
        pipe = r.pipeline(transaction=False)
        for job_id in started:
            pipe.hget(q.keys.job(job_id.decode()), "worker")
        n += sum(1 for owner in pipe.execute() if owner and f".{w.pid}.".encode() in owner)
    return n
