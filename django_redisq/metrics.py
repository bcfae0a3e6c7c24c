"""Prometheus metrics (``pip install "django-redisq[prometheus]"``).

Everything here is read from Redis at scrape time, so every endpoint shows the same
cluster-wide series, whichever process serves it, and counts survive worker restarts:

* ``redisq_jobs_total{queue,function,outcome}``: attempts ended per outcome (finished, failed,
  retried, timed_out, canceled, recovered), from the queues' stats hashes that workers update
  with the outcomes they write (see ``engine.counters``);
* ``redisq_job_wait_seconds{queue,function}`` (enqueued or due, to started) and
  ``redisq_job_run_seconds{queue,function}``: histograms, from the same hashes;
* ``redisq_queue_jobs{queue,state}``: jobs per state now;
* ``redisq_queue_workers{queue}`` (live workers serving the queue) and ``redisq_workers``
  (live workers), from the worker registry; ``redisq_workers_suspended`` is 1 while
  ``rqsuspend`` holds.

Serve them with ``metrics_view`` in ``urls.py`` (staff session, or
``Authorization: Bearer <REDISQ["METRICS_TOKEN"]>``) or with ``rqworker --metrics-port N``.
Labels are queue, function (registered names only), outcome and state: bounded.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import redis
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from . import stats
from .conf import all_queues, get_queue, redisq_settings
from .engine.counters import OUTCOMES, parse_stats
from .engine.errors import RedisQError
from .engine.keys import STATES
from .engine.ops import Batch, Cmd, Steps
from .engine.queue import Queue
from .metrics_server import MetricsServer

INSTALL_HINT = 'pip install "django-redisq[prometheus]"'

log = logging.getLogger("django_redisq.metrics")

#: What a scrape raises when it cannot read the queues (Redis down, an error reply).
_UNREADABLE = (RedisQError, redis.RedisError, OSError)


def _unreadable(exc: BaseException) -> str:
    """The 503 body for a scrape that could not read Redis, logged once as a line (not a
    traceback per scrape while Redis is down). Errors name the masked URL, never a password."""
    log.warning("metrics: cannot read the queues from Redis: %s", exc)
    return f"503: cannot read the queues from Redis: {exc}\n"

try:
    import prometheus_client
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import CollectorRegistry
except ImportError:  # the [prometheus] extra is not installed
    prometheus_client = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from prometheus_client.core import Metric


def available() -> bool:
    """Whether ``prometheus-client`` is installed."""
    return prometheus_client is not None


def require() -> None:
    if not available():
        raise ImportError(f"django-redisq metrics need prometheus-client: {INSTALL_HINT}")


def _stats_steps(queues: Sequence[Queue]) -> Steps[list[Any]]:
    replies = yield Batch([Cmd(("HGETALL", q.keys.stats)) for q in queues])
    return list(replies)


class RedisQCollector:
    """A prometheus-client collector that reads the queues' state from Redis on each scrape
    (per Redis deployment: the ``rqstats`` snapshot's two round trips, plus one for the stats
    hashes)."""

    def __init__(self, queue_names: Sequence[str] | None = None) -> None:
        self.queue_names = list(queue_names) if queue_names is not None else None

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: registering it does not scrape Redis

    def collect(self) -> Iterator[Metric]:
        queues = ([get_queue(n) for n in self.queue_names] if self.queue_names is not None
                  else all_queues())
        snap = stats.snapshot([q.name for q in queues])
        depth = GaugeMetricFamily("redisq_queue_jobs", "Jobs in each state, per queue.",
                                  labels=["queue", "state"])
        serving = GaugeMetricFamily("redisq_queue_workers",
                                    "Live workers serving each queue.", labels=["queue"])
        for name, counts in snap.queues.items():
            for state in STATES:
                depth.add_metric([name, state], counts.get(state, 0))
            serving.add_metric([name], len(snap.serving(name)))
        yield depth
        yield serving
        yield GaugeMetricFamily("redisq_workers", "Live workers (as rqstats counts them).",
                                value=sum(1 for w in snap.workers if w.alive))
        yield GaugeMetricFamily("redisq_workers_suspended",
                                "1 while workers are suspended (rqsuspend).",
                                value=int(snap.suspended))

        jobs = CounterMetricFamily("redisq_jobs", "Job attempts ended, per outcome.",
                                   labels=["queue", "function", "outcome"])
        wait = HistogramMetricFamily("redisq_job_wait_seconds", "Seconds from enqueue (or due "
                                     "time) to start.", labels=["queue", "function"])
        run = HistogramMetricFamily("redisq_job_run_seconds", "Seconds a job attempt ran.",
                                    labels=["queue", "function"])
        for group in stats.by_connection(queues):
            for q, raw in zip(group, group[0].run(_stats_steps(group))):
                for func, fs in sorted(parse_stats(raw or {}).items()):
                    for outcome in OUTCOMES:
                        if outcome in fs.outcomes:
                            jobs.add_metric([q.name, func, outcome], fs.outcomes[outcome])
                    for family, hist in ((wait, fs.wait), (run, fs.run)):
                        if hist.count:
                            family.add_metric([q.name, func], hist.cumulative(), hist.sum)
        yield jobs
        yield wait
        yield run


def registry(queue_names: Sequence[str] | None = None) -> CollectorRegistry:
    """A registry holding only the django-redisq collector."""
    require()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RedisQCollector(queue_names))  # type: ignore[arg-type]
    return reg


def _allowed(request: HttpRequest) -> bool:
    token = redisq_settings().metrics_token
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition of every configured queue.

    Allowed to staff users (session) and to requests bearing ``REDISQ["METRICS_TOKEN"]``;
    everyone else gets 403."""
    if not _allowed(request):
        return HttpResponse("403 Forbidden: staff session or metrics bearer token required.\n",
                            status=403, content_type="text/plain; charset=utf-8")
    if not available():
        return HttpResponse(f"503: metrics need prometheus-client: {INSTALL_HINT}\n",
                            status=503, content_type="text/plain; charset=utf-8")
    try:
        body = prometheus_client.generate_latest(registry())
    except _UNREADABLE as exc:
        return HttpResponse(_unreadable(exc), status=503,
                            content_type="text/plain; charset=utf-8")
    return HttpResponse(body, content_type=prometheus_client.CONTENT_TYPE_LATEST)


def bind_metrics_server(port: int, addr: str = "127.0.0.1",
                        queue_names: Sequence[str] | None = None) -> MetricsServer:
    """Bind ``addr:port`` for ``rqworker --metrics-port``; the caller chooses how to serve it
    (a thread, or a process of its own under ``--processes``). ``OSError`` if it cannot bind."""
    require()
    app = prometheus_client.make_wsgi_app(registry(queue_names))

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            return app(environ, start_response)  # type: ignore[no-any-return]
        except _UNREADABLE as exc:  # a failed scrape (Prometheus marks the target down)
            start_response("503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [_unreadable(exc).encode()]

    return MetricsServer(port, addr, guarded)


def url_mounted() -> bool:
    """Whether ``metrics_view`` is in the root URLconf (the system check asks)."""
    from django.urls import URLPattern, URLResolver, get_resolver

    def walk(patterns: Sequence[Any]) -> bool:
        for p in patterns:
            if isinstance(p, URLResolver) and walk(p.url_patterns):
                return True
            if isinstance(p, URLPattern) and getattr(p.callback, "__wrapped__",
                                                     p.callback) is _undecorated_view:
                return True
        return False

    try:
        return walk(get_resolver().url_patterns)
    except Exception:  # a broken URLconf is reported by Django's own checks
        return False


_undecorated_view = getattr(metrics_view, "__wrapped__", metrics_view)
