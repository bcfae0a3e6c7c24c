"""One adapter per queue system: how it enqueues, how its worker runs, how a client waits.

Every adapter is imported by ``child.py`` inside a fresh subprocess and imports its library
lazily, so the benchmark runs with only the systems that are installed. A *plan* has a
``setup()`` (imports, connections, worker construction; not timed) and a ``run()`` (the timed
part, started by the parent's GO line) that returns a dict for the parent.

Peers run at their defaults except where a row's label says otherwise. Library logging stays
at WARNING for every system (nobody pays for per-job INFO lines).
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import benchjobs

GATHER = 100  # concurrent enqueues in flight, for systems whose bulk API is asyncio.gather
TIMEOUT = 30.0  # seconds a latency client waits for one result


class NotApplicable(Exception):
    """This system has no equivalent of what the scenario asks (reported as n/a)."""


# -- helpers ------------------------------------------------------------------------------------
class Finish:
    """Counts finished jobs across the worker processes of one measurement.

    Each process owns one 8-byte slot of a small shared file; the process whose hit brings the
    sum to the target records the end time. No Redis traffic is added to count.
    """

    def __init__(self, path: str, index: int, procs: int, target: int) -> None:
        self._file = open(path, "r+b")  # noqa: SIM115 - kept open for the mmap
        self._mm = mmap.mmap(self._file.fileno(), 8 * procs)
        self._fmt = f"<{procs}q"
        self._off = 8 * index
        self.target = target
        self.local = 0
        self.t_end: float | None = None
        self.event = threading.Event()
        self._lock = threading.Lock()
        self.on_done: Callable[[], None] | None = None

    def hit(self, *_args: Any, **_kwargs: Any) -> None:
        with self._lock:
            self.local += 1
            struct.pack_into("<q", self._mm, self._off, self.local)
            if self.t_end is None and sum(struct.unpack_from(self._fmt, self._mm)) >= self.target:
                self.t_end = time.monotonic()
                self.event.set()
                if self.on_done is not None:
                    self.on_done()

    def wait(self, timeout: float) -> float:
        if not self.event.wait(timeout):
            raise TimeoutError(f"only {self.local} jobs finished here within {timeout} s")
        assert self.t_end is not None
        return self.t_end


class Loop:
    """One event loop per plan, so setup and run share connections."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    def __call__(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)


class Plan:
    def __init__(self, setup: Callable[[], Any], run: Callable[[], dict[str, Any]]) -> None:
        self.setup = setup
        self.run = run


def _chunks(n: int, size: int) -> list[int]:
    return [min(size, n - i) for i in range(0, n, size)]


def _body(spec: dict[str, Any]) -> Any:
    """The job body for the spec's job kind, sync or async."""
    kind = spec["job"]
    table = {
        "noop": (benchjobs.noop, benchjobs.anoop),
        "sleep": (benchjobs.sleep10, benchjobs.asleep10),
        "echo": (benchjobs.echo, benchjobs.aecho),
    }
    pair = table[kind]
    return pair[1] if spec["mode"] == "async" else pair[0]


def _ctx_body(spec: dict[str, Any]) -> Any:
    return {"noop": benchjobs.ctx_noop, "sleep": benchjobs.ctx_sleep10,
            "echo": benchjobs.ctx_echo}[spec["job"]]


def _latency_loop(trip: Callable[[int], Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Warm-up trips, then timed trips until the count or the time budget is reached."""
    for i in range(spec["warmup"]):
        if trip(-1 - i) != -1 - i:
            raise AssertionError("warm-up trip returned a wrong result")
    out: list[float] = []
    budget_end = time.monotonic() + spec["max_seconds"]
    for i in range(spec["trips"]):
        t0 = time.perf_counter()
        got = trip(i)
        out.append((time.perf_counter() - t0) * 1000)
        if got != i:
            raise AssertionError(f"trip {i} returned {got!r}")
        if time.monotonic() > budget_end:
            break
    return {"latencies_ms": out}


async def _alatency_loop(trip: Callable[[int], Any], spec: dict[str, Any]) -> dict[str, Any]:
    for i in range(spec["warmup"]):
        if await trip(-1 - i) != -1 - i:
            raise AssertionError("warm-up trip returned a wrong result")
    out: list[float] = []
    budget_end = time.monotonic() + spec["max_seconds"]
    for i in range(spec["trips"]):
        t0 = time.perf_counter()
        got = await trip(i)
        out.append((time.perf_counter() - t0) * 1000)
        if got != i:
            raise AssertionError(f"trip {i} returned {got!r}")
        if time.monotonic() > budget_end:
            break
    return {"latencies_ms": out}


def _serve_forever() -> dict[str, Any]:
    while True:
        time.sleep(3600)


# -- django-redisq ------------------------------------------------------------------------------
def _django_setup(url: str) -> None:
    """Minimal Django settings for one queue at ``url`` (SQLite in memory), then setup()."""
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django_redisq"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        REDISQ={"QUEUES": {"default": {"URL": url}}},
        USE_TZ=True,
    )
    django.setup()


#: Every job body the scenarios run, registered by our workers.
_BODIES = (benchjobs.noop, benchjobs.anoop, benchjobs.sleep10, benchjobs.asleep10,
           benchjobs.echo, benchjobs.aecho)


class Redisq:
    """The engine alone (no Django): RedisConnection + Queue + Worker."""

    default_concurrency = 10

    def __init__(self, spec: dict[str, Any]) -> None:
        from django_redisq.engine import Queue, RedisConnection
        from django_redisq.engine.registry import function_name

        self.spec = spec
        self.queue = Queue("default", RedisConnection(spec["url"]))
        self.func = function_name(_body(spec))

    def enqueuer(self) -> Plan:
        spec, q, func = self.spec, self.queue, self.func
        if spec.get("django"):
            return self._django_enqueuer()

        def run() -> dict[str, Any]:
            if spec["bulk"]:
                for k in _chunks(spec["n"], spec["chunk"]):
                    q.enqueue_many([(func, (), {})] * k)
            else:
                for _ in range(spec["n"]):
                    q.enqueue(func)
            return {}

        return Plan(lambda: q.connection.client().ping(), run)

    def _django_enqueuer(self) -> Plan:
        spec = self.spec
        state: dict[str, Any] = {}

        def setup() -> None:
            _django_setup(spec["url"])
            from django_redisq import job

            state["job"] = job(benchjobs.noop)
            from django_redisq.conf import get_queue

            state["queue"] = get_queue("default")
            state["queue"].connection.client().ping()

        def run() -> dict[str, Any]:
            fn, q = state["job"], state["queue"]
            if spec["bulk"]:
                for k in _chunks(spec["n"], spec["chunk"]):
                    q.send_many([fn.prepare() for _ in range(k)])
            else:
                for _ in range(spec["n"]):
                    fn.delay()
            return {}

        return Plan(setup, run)

    def worker(self) -> Plan:
        spec = self.spec
        if spec["variant_opts"].get("rqworker"):
            return self._django_worker()
        from django_redisq.engine import eventloop, registry
        from django_redisq.engine.worker import Worker, WorkerOptions

        for fn in _BODIES:
            registry.register(fn)
        conc = spec["conc"] or self.default_concurrency
        worker = Worker([self.queue], options=WorkerOptions(concurrency=conc,
                                                           burst=spec["burst"]))

        def run() -> dict[str, Any]:
            eventloop.run(worker.run())  # the loop rqworker runs on
            return {"t_end": time.monotonic(), "processed": benchjobs.count()}

        return Plan(lambda: None, run)

    def _django_worker(self) -> Plan:
        """The worker ``manage.py rqworker`` runs: Django settings, ``@job`` registration, the
        Django hooks (connection hygiene, signals), built by ``run_worker``'s own builder."""
        spec = self.spec
        state: dict[str, Any] = {}

        def setup() -> None:
            _django_setup(spec["url"])
            from django_redisq import job
            from django_redisq.worker import build_worker

            for fn in _BODIES:
                job(fn)
            state["worker"] = build_worker(["default"], burst=spec["burst"],
                                           concurrency=spec["conc"] or self.default_concurrency)

        def run() -> dict[str, Any]:
            from django_redisq.engine import eventloop

            eventloop.run(state["worker"].run())
            return {"t_end": time.monotonic(), "processed": benchjobs.count()}

        return Plan(setup, run)

    def latency(self) -> Plan:
        q, func = self.queue, self.func

        def trip(i: int) -> Any:
            return q.enqueue(func, [i]).get(timeout=TIMEOUT)

        return Plan(lambda: q.connection.client().ping(),
                    lambda: _latency_loop(trip, self.spec))


# -- rq -----------------------------------------------------------------------------------------
class RQ:
    default_concurrency = 1

    def __init__(self, spec: dict[str, Any]) -> None:
        from redis import Redis
        from rq import Queue

        self.spec = spec
        if spec["mode"] == "async":
            raise NotApplicable("rq runs plain functions only")
        self.redis = Redis.from_url(spec["url"])
        self.queue = Queue("default", connection=self.redis)
        self.func = _body(spec)

    def enqueuer(self) -> Plan:
        from rq import Queue

        spec, q, func = self.spec, self.queue, self.func

        def run() -> dict[str, Any]:
            if spec["bulk"]:
                for k in _chunks(spec["n"], spec["chunk"]):
                    q.enqueue_many([Queue.prepare_data(func) for _ in range(k)])
            else:
                for _ in range(spec["n"]):
                    q.enqueue(func)
            return {}

        return Plan(self.redis.ping, run)

    def worker(self) -> Plan:
        from rq import SimpleWorker, Worker

        spec = self.spec
        if spec["conc"] not in (None, 1):
            raise NotApplicable("an rq worker runs one job at a time (WorkerPool forks more "
                                "processes)")
        cls = SimpleWorker if spec["variant_opts"].get("simple") else Worker
        worker = cls([self.queue], connection=self.redis)

        def run() -> dict[str, Any]:
            from rq.registry import FinishedJobRegistry

            worker.work(burst=spec["burst"], logging_level="WARNING")
            t_end = time.monotonic()
            # rq keeps its counters in Redis (jobs run in forked work horses): count the
            # finished registry, which holds every job of this measurement.
            return {"t_end": t_end,
                    "processed_total": FinishedJobRegistry(queue=self.queue).count}

        return Plan(self.redis.ping, run)

    def latency(self) -> Plan:
        q, func = self.queue, self.func

        def trip(i: int) -> Any:
            job = q.enqueue(func, i)
            res = job.latest_result(timeout=int(TIMEOUT))
            return None if res is None else res.return_value

        return Plan(self.redis.ping, lambda: _latency_loop(trip, self.spec))


# -- arq ----------------------------------------------------------------------------------------
class ARQ:
    default_concurrency = 10

    def __init__(self, spec: dict[str, Any]) -> None:
        from arq.connections import RedisSettings

        self.spec = spec
        if spec["mode"] == "sync":
            spec["mode"] = "async"  # arq runs coroutines only
        self.settings = RedisSettings.from_dsn(spec["url"])
        self.body = _ctx_body(spec)
        self.name = self.body.__name__
        self.loop = Loop()
        self.tuned = bool(spec["variant_opts"].get("tuned"))

    async def _pool(self) -> Any:
        from arq import create_pool

        return await create_pool(self.settings)

    def enqueuer(self) -> Plan:
        spec, name = self.spec, self.name
        st: dict[str, Any] = {}

        async def setup() -> None:
            st["pool"] = await self._pool()
            await st["pool"].ping()

        async def run() -> dict[str, Any]:
            pool = st["pool"]
            if spec["bulk"]:
                for k in _chunks(spec["n"], GATHER):
                    await asyncio.gather(*(pool.enqueue_job(name) for _ in range(k)))
            else:
                for _ in range(spec["n"]):
                    await pool.enqueue_job(name)
            return {}

        return Plan(lambda: self.loop(setup()), lambda: self.loop(run()))

    def worker(self) -> Plan:
        from arq.worker import Worker

        spec = self.spec
        st: dict[str, Any] = {}
        kwargs: dict[str, Any] = {"max_jobs": spec["conc"] or self.default_concurrency}
        if self.tuned:
            kwargs["poll_delay"] = 0.01

        async def setup() -> None:
            st["w"] = Worker(functions=[self.body], redis_settings=self.settings,
                             burst=spec["burst"], **kwargs)

        async def run() -> dict[str, Any]:
            await st["w"].main()
            return {"t_end": time.monotonic(), "processed": benchjobs.count()}

        return Plan(lambda: self.loop(setup()), lambda: self.loop(run()))

    def latency(self) -> Plan:
        st: dict[str, Any] = {}
        name = self.name
        wait: dict[str, Any] = {"poll_delay": 0.01} if self.tuned else {}

        async def setup() -> None:
            st["pool"] = await self._pool()

        async def trip(i: int) -> Any:
            job = await st["pool"].enqueue_job(name, i)
            return await job.result(timeout=TIMEOUT, **wait)

        return Plan(lambda: self.loop(setup()),
                    lambda: self.loop(_alatency_loop(trip, self.spec)))


# -- saq ----------------------------------------------------------------------------------------
class SAQ:
    default_concurrency = 10

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        if spec["mode"] == "sync":
            spec["mode"] = "async"
        self.body = _ctx_body(spec)
        self.name = self.body.__qualname__
        self.loop = Loop()
        self.st: dict[str, Any] = {}

    async def _queue(self) -> Any:
        from saq import Queue

        q = Queue.from_url(self.spec["url"])
        await q.connect()
        return q

    def enqueuer(self) -> Plan:
        spec, name, st = self.spec, self.name, self.st

        async def setup() -> None:
            st["q"] = await self._queue()

        async def run() -> dict[str, Any]:
            q = st["q"]
            if spec["bulk"]:
                for k in _chunks(spec["n"], GATHER):
                    await asyncio.gather(*(q.enqueue(name) for _ in range(k)))
            else:
                for _ in range(spec["n"]):
                    await q.enqueue(name)
            return {}

        return Plan(lambda: self.loop(setup()), lambda: self.loop(run()))

    def worker(self) -> Plan:
        from saq import Worker

        spec, st = self.spec, self.st
        finish: Finish | None = spec.get("finish")

        async def after(ctx: Any) -> None:
            assert finish is not None
            finish.hit()

        async def setup() -> None:
            st["q"] = await self._queue()
            kwargs: dict[str, Any] = {}
            if finish is not None:
                kwargs["after_process"] = after
            st["w"] = Worker(st["q"], functions=[self.body],
                             concurrency=spec["conc"] or self.default_concurrency, **kwargs)

        async def run() -> dict[str, Any]:
            task = asyncio.ensure_future(st["w"].start())
            if finish is None:
                await task
                return {}
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            finish.on_done = lambda: loop.call_soon_threadsafe(done.set)
            if finish.event.is_set():
                done.set()
            waiter = asyncio.ensure_future(done.wait())
            await asyncio.wait({task, waiter}, timeout=spec["run_timeout"],
                               return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
            if not done.is_set():
                raise TimeoutError(f"only {finish.local} jobs finished here")
            return {"t_end": finish.t_end, "complete": True}

        return Plan(lambda: self.loop(setup()), lambda: self.loop(run()))

    def latency(self) -> Plan:
        """Waits through saq's pub/sub listener. ``job.refresh(until_complete=...)`` reads the
        job, then subscribes, so a job finishing in between is missed (the wait runs into its
        timeout); here the listener is registered before the job is enqueued, on a
        subscription that a long-lived listener keeps open."""
        from saq.job import TERMINAL_STATUSES, Job

        st, name = self.st, self.name

        def ended(_key: str, status: Any) -> bool:
            return status in TERMINAL_STATUSES

        async def setup() -> None:
            st["q"] = q = await self._queue()
            st["keep"] = asyncio.ensure_future(q.listen(["bench-keepalive"], ended, None))
            await asyncio.sleep(0.2)

        async def trip(i: int) -> Any:
            q = st["q"]
            job = Job(function=name, kwargs={"x": i})
            waiter = asyncio.ensure_future(q.listen([job.key], ended, TIMEOUT))
            for _ in range(5):  # let the listener register before the job can finish
                await asyncio.sleep(0)
            await q.enqueue(job)
            await waiter
            await job.refresh()
            return job.result

        return Plan(lambda: self.loop(setup()),
                    lambda: self.loop(_alatency_loop(trip, self.spec)))


# -- streaq -------------------------------------------------------------------------------------
class Streaq:
    default_concurrency = 16

    def __init__(self, spec: dict[str, Any]) -> None:
        from streaq import Worker

        self.spec = spec
        if spec["mode"] == "sync":
            spec["mode"] = "async"
        self.loop = Loop()
        self.worker_obj = Worker(redis_url=spec["url"],
                                 concurrency=spec["conc"] or self.default_concurrency)
        self.task = self.worker_obj.task(_body(spec))

    def enqueuer(self) -> Plan:
        spec, w, task = self.spec, self.worker_obj, self.task

        async def setup() -> None:
            await w.__aenter__()  # the worker object is also streaq's client

        async def run() -> dict[str, Any]:
            if spec["bulk"]:
                for k in _chunks(spec["n"], spec["chunk"]):
                    await w.enqueue_many([task.enqueue() for _ in range(k)])
            else:
                for _ in range(spec["n"]):
                    await task.enqueue()
            return {}

        return Plan(lambda: self.loop(setup()), lambda: self.loop(run()))

    def worker(self) -> Plan:
        spec, w = self.spec, self.worker_obj
        w.burst = spec["burst"]

        async def run() -> dict[str, Any]:
            await w.run_async()
            return {"t_end": time.monotonic(), "processed": benchjobs.count()}

        return Plan(lambda: None, lambda: self.loop(run()))

    def latency(self) -> Plan:
        w, task = self.worker_obj, self.task

        async def setup() -> None:
            await w.__aenter__()

        async def trip(i: int) -> Any:
            t = await task.enqueue(i)
            res = await t.result(timeout=int(TIMEOUT))
            return res.result

        return Plan(lambda: self.loop(setup()),
                    lambda: self.loop(_alatency_loop(trip, self.spec)))


# -- dramatiq -----------------------------------------------------------------------------------
class Dramatiq:
    default_concurrency = 8

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        if spec["mode"] == "async":
            raise NotApplicable("dramatiq rows run plain functions")
        prefetch = spec["variant_opts"].get("prefetch")
        if prefetch:
            # Read once, when dramatiq.worker is imported.
            os.environ["dramatiq_queue_prefetch"] = str(prefetch)  # noqa: SIM112
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        self.broker = RedisBroker(url=spec["url"])
        results = spec["job"] == "echo"
        if results:
            from dramatiq.results import Results
            from dramatiq.results.backends import RedisBackend

            self.broker.add_middleware(Results(backend=RedisBackend(url=spec["url"])))
        dramatiq.set_broker(self.broker)
        body = _body(spec)
        options = {"store_results": True} if results else {}
        self.actor = dramatiq.actor(body, actor_name=body.__name__, broker=self.broker,
                                    **options)

    def enqueuer(self) -> Plan:
        spec, actor = self.spec, self.actor
        if spec["bulk"]:
            raise NotApplicable("dramatiq has no bulk or async enqueue (group() sends one by one)")

        def run() -> dict[str, Any]:
            for _ in range(spec["n"]):
                actor.send()
            return {}

        return Plan(lambda: self.broker.client.ping(), run)

    def worker(self) -> Plan:
        import dramatiq
        from dramatiq import Worker

        spec = self.spec
        finish: Finish | None = spec.get("finish")
        if finish is not None:
            class Count(dramatiq.Middleware):
                def after_ack(self, broker: Any, message: Any) -> None:
                    finish.hit()

            self.broker.add_middleware(Count())
        worker = Worker(self.broker, worker_threads=spec["conc"] or self.default_concurrency)

        def run() -> dict[str, Any]:
            worker.start()
            if finish is None:
                return _serve_forever()
            return {"t_end": finish.wait(spec["run_timeout"]), "complete": True}

        return Plan(lambda: self.broker.client.ping(), run)

    def latency(self) -> Plan:
        actor = self.actor

        def trip(i: int) -> Any:
            return actor.send(i).get_result(block=True, timeout=int(TIMEOUT * 1000))

        return Plan(lambda: self.broker.client.ping(), lambda: _latency_loop(trip, self.spec))


# -- huey ---------------------------------------------------------------------------------------
class Huey:
    default_concurrency = 1

    def __init__(self, spec: dict[str, Any]) -> None:
        from huey import RedisHuey

        self.spec = spec
        if spec["mode"] == "async":
            raise NotApplicable("huey runs plain functions")
        opts = {"notify_result": True} if spec["variant_opts"].get("notify_result") else {}
        self.huey = RedisHuey("bench", url=spec["url"], **opts)
        body = _body(spec)
        self.task = self.huey.task(name=body.__name__)(body)

    def enqueuer(self) -> Plan:
        spec, task = self.spec, self.task
        if spec["bulk"]:
            raise NotApplicable("huey has no bulk or async enqueue")

        def run() -> dict[str, Any]:
            for _ in range(spec["n"]):
                task()
            return {}

        return Plan(lambda: self.huey.storage.conn.ping(), run)

    def worker(self) -> Plan:
        from huey.signals import SIGNAL_COMPLETE

        spec = self.spec
        finish: Finish | None = spec.get("finish")
        if finish is not None:
            self.huey.signal(SIGNAL_COMPLETE)(finish.hit)
        consumer = self.huey.create_consumer(workers=spec["conc"] or self.default_concurrency,
                                             worker_type="thread")

        def run() -> dict[str, Any]:
            consumer.start()
            if finish is None:
                return _serve_forever()
            return {"t_end": finish.wait(spec["run_timeout"]), "complete": True}

        return Plan(lambda: self.huey.storage.conn.ping(), run)

    def latency(self) -> Plan:
        task = self.task

        def trip(i: int) -> Any:
            return task(i).get(blocking=True, timeout=TIMEOUT)

        return Plan(lambda: self.huey.storage.conn.ping(), lambda: _latency_loop(trip, self.spec))


ADAPTERS: dict[str, type] = {
    "redisq": Redisq,
    "rq": RQ,
    "arq": ARQ,
    "saq": SAQ,
    "streaq": Streaq,
    "dramatiq": Dramatiq,
    "huey": Huey,
}
