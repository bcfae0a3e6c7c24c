"""What observability costs: no-op throughput with and without the optional extras.

Usage::

    python bench/extras_overhead.py              # 5,000 jobs, 3 repetitions (about a minute)
    python bench/extras_overhead.py --n 2000 --reps 1

Each measurement is a fresh subprocess against a private ``redis-server`` (started on a free
loopback port, stopped by PID at the end) that enqueues N no-op jobs (one by one, timed) and
drains them with one engine worker in burst mode (concurrency 10, timed), in one of these
modes (the order rotates between repetitions):

* ``none``: ``opentelemetry`` and ``prometheus_client`` cannot be imported (an import hook
  hides them), as when the extras are not installed;
* ``no-counters``: as ``none``, and the worker's job counters (always on; they feed the
  metrics) are replaced by a stub, to show what they cost;
* ``installed``: both packages importable, no OpenTelemetry SDK configured (the usual case
  when some other library pulled the API in; the worker then starts no job spans);
* ``sdk``: the OpenTelemetry SDK configured (``TracerProvider`` + ``BatchSpanProcessor`` with
  an exporter that drops spans), jobs enqueued inside an active span (each carries a
  ``traceparent``) and a Prometheus ``--metrics-port`` style server running in the worker.

Prints jobs/s medians and each mode's ratio to ``none``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("none", "no-counters", "installed", "sdk")
HIDDEN = ("opentelemetry", "prometheus_client")


def noop() -> None:
    return None


class _Hide:
    """A meta path finder that makes the extras look uninstalled."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.split(".")[0] in HIDDEN:
            raise ImportError(f"{name} hidden by bench/extras_overhead.py")
        return None


def child(mode: str, url: str, n: int) -> dict[str, Any]:
    if mode in ("none", "no-counters"):
        sys.meta_path.insert(0, _Hide())  # type: ignore[arg-type]
    sys.path.insert(0, str(ROOT))
    from django_redisq.engine import Queue, RedisConnection, tracing
    from django_redisq.engine.registry import registry
    from django_redisq.engine.worker import Worker, WorkerOptions

    assert (mode in ("installed", "sdk")) == tracing.ENABLED, (mode, tracing.ENABLED)
    registry.register(noop, name="bench.noop")
    q = Queue("default", RedisConnection(url))
    q.connection.client().ping()
    span_cm: Any = None
    if mode == "sdk":
        import prometheus_client
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
        span_cm = trace.get_tracer("bench").start_as_current_span("request")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        prometheus_client.start_http_server(port, addr="127.0.0.1")

    t0, c0 = time.perf_counter(), time.process_time()
    if span_cm is not None:
        with span_cm:
            for _ in range(n):
                q.enqueue("bench.noop")
    else:
        for _ in range(n):
            q.enqueue("bench.noop")
    enqueue_s, enqueue_cpu = time.perf_counter() - t0, time.process_time() - c0

    worker = Worker([q], options=WorkerOptions(concurrency=10, burst=True))
    if mode == "no-counters":
        class _Stub:
            def record(self, *a: Any) -> None:
                return None

            def take(self, queue: str) -> None:
                return None

        worker.counters = _Stub()  # type: ignore[assignment]
    t0, c0 = time.perf_counter(), time.process_time()
    asyncio.run(worker.run())
    drain_s, drain_cpu = time.perf_counter() - t0, time.process_time() - c0
    assert worker.processed == n, (worker.processed, n)
    return {"mode": mode, "enqueue": n / enqueue_s, "drain": n / drain_s,
            "enqueue_cpu": enqueue_cpu / n * 1e6, "drain_cpu": drain_cpu / n * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child", choices=MODES)
    ap.add_argument("--url")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.url, args.n)))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from admin_page import PrivateRedis  # the bench's own redis-server: loopback, free port

    server = PrivateRedis(shutil.which("redis-server") or "redis-server")
    url = server.url
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    try:
        import redis

        client = redis.Redis.from_url(url)
        for rep in range(args.reps):
            order = MODES[rep % len(MODES):] + MODES[:rep % len(MODES)]
            for mode in order:
                client.flushall()
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, "--url", url, "--n",
                     str(args.n)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)})
                if out.returncode:
                    print(out.stdout, out.stderr, file=sys.stderr)
                    return 1
                results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.stop()

    keys = ("enqueue", "drain", "enqueue_cpu", "drain_cpu")
    med = {m: {k: statistics.median(r[k] for r in results[m]) for k in keys} for m in MODES}
    base = med["none"]
    print(f"{args.n} no-op jobs, median of {args.reps}; (ratio to 'none'). CPU is the "
          f"process's own CPU time per job, steadier than jobs/s on a shared machine.\n")
    print("| mode | enqueue jobs/s | enqueue CPU µs/job | drain jobs/s | drain CPU µs/job |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode in MODES:
        cells = [f"{med[mode][k]:,.0f} ({med[mode][k] / base[k]:.2f})" for k in keys]
        print(f"| {mode} | {cells[0]} | {cells[2]} | {cells[1]} | {cells[3]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
