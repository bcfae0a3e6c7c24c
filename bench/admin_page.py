"""How the admin's failed-jobs list scales: first and last page of 100,000 failed jobs.

Usage::

    python bench/admin_page.py                       # a private redis-server, 100,000 jobs
    python bench/admin_page.py --jobs 1000000 --requests 50
    python bench/admin_page.py --redis-url redis://127.0.0.1:6379/15   # FLUSHDB first!

The script fills a queue's failed registry with N job hashes (written directly with HSET and
ZADD in pipelines: the shape a worker leaves behind, with a realistic traceback), then asks
for the failed list's first and last page through Django's test Client as a logged-in
superuser: the full server side (URL routing, admin checks, Redis reads, template rendering),
without a network or a browser. For each page it prints the median and p90 of ``--requests``
requests in ms, and the Redis commands (``INFO commandstats`` calls, our own INFO excluded)
and round trips (``total_reads_processed``) per request.

Django is configured here (in-memory SQLite, the admin, django_redisq); nothing is read from
a project's settings. Without ``--redis-url`` a private ``redis-server`` is started on a free
loopback port (no persistence, its own temporary directory) and stopped by PID at the end.
With ``--redis-url`` that database is FLUSHED: point it at a scratch database only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRACEBACK = "".join(
    f'  File "/srv/app/module_{i}.py", line {10 * i}, in function_{i}\n'
    f"    result = call_something(argument_{i}, other=value_{i})\n" for i in range(12)
)
TRACEBACK = f"Traceback (most recent call last):\n{TRACEBACK}ValueError: boom\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own: loopback, free port, no persistence, stopped by PID."""

    def __init__(self, exe: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="redisq-admin-bench-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)  # waiting for the server to listen
        client.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def configure_django(redis_url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
            "django.contrib.sessions", "django.contrib.messages", "django_redisq",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {"context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]},
        }],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        STATIC_URL="/static/",
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        REDISQ={"QUEUES": {"default": {"URL": redis_url}}},
    )
    django.setup()


def urls() -> list[Any]:
    from django.contrib import admin
    from django.urls import path

    return [path("admin/", admin.site.urls)]


def __getattr__(name: str) -> Any:  # ROOT_URLCONF is this module: urlpatterns on demand
    if name == "urlpatterns":
        return urls()
    raise AttributeError(name)


def fill(client: Any, keys: Any, n: int, chunk: int = 10_000) -> float:
    """Write n failed jobs as a worker leaves them; returns seconds taken."""
    start = time.perf_counter()
    now = int(time.time() * 1000)
    err = {"type": "builtins.ValueError", "message": "boom", "traceback": TRACEBACK,
           "attempt": 1, "at": now}
    error, errors = json.dumps(err), json.dumps([err])
    payload = json.dumps([[12345, "user@example.com"], {"retry": True}])
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        jid = f"{i:032x}"
        pipe.hset(keys.job(jid), mapping={
            "v": 1, "id": jid, "queue": "default", "func": "app.tasks.send_email",
            "status": "failed", "ser": "json", "payload": payload, "priority": 0,
            "timeout": 180, "result_ttl": 86_400_000, "failure_ttl": 604_800_000,
            "attempts": 1, "enqueued_at": now - 500, "started_at": now - 400,
            "ended_at": now - 300, "worker": "host.1234.abcdef", "error": error,
            "errors": errors})
        pipe.zadd(keys.state("failed"), {jid: now + 604_800_000 + i})
        if (i + 1) % chunk == 0:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - start


def calls(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def reads(client: Any) -> int:
    return int(client.info("stats")["total_reads_processed"])


def measure(http: Any, redis_client: Any, url: str, requests: int) -> dict[str, float]:
    for _ in range(3):  # warm up: connections, templates, sessions
        assert http.get(url).status_code == 200
    times = []
    c0, r0 = calls(redis_client), reads(redis_client)
    for _ in range(requests):
        t = time.perf_counter()
        response = http.get(url)
        times.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200, response.status_code
    # our two INFO calls (commandstats, then stats) are one command and one read each
    c1, r1 = calls(redis_client) - 1, reads(redis_client) - 2
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[int(0.9 * (len(times) - 1))],
        "commands": (c1 - c0) / requests,
        "round_trips": (r1 - r0) / requests,
        "bytes": len(response.content),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000, help="failed jobs to fill")
    ap.add_argument("--requests", type=int, default=20, help="requests per page (median)")
    ap.add_argument("--redis-url", help="use this Redis (its database is FLUSHED) instead "
                                        "of a private redis-server")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    args = ap.parse_args()

    server = None
    if args.redis_url:
        url = args.redis_url
    else:
        if not shutil.which(args.redis_server):
            ap.error("redis-server is not installed (apt-get install -y redis-server), or "
                     "pass --redis-url")
        server = PrivateRedis(args.redis_server)
        url = server.url
    try:
        os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        configure_django(url)
        import redis
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.test import Client
        from django.test.utils import setup_test_environment

        from django_redisq import get_queue
        from django_redisq.admin_views import PER_PAGE

        setup_test_environment()
        call_command("migrate", run_syncdb=True, verbosity=0)
        user = get_user_model().objects.create_superuser("bench", "b@example.com", "pw")
        http = Client()
        http.force_login(user)

        r = redis.Redis.from_url(url)
        r.flushdb()
        queue = get_queue("default")
        seconds = fill(r, queue.keys, args.jobs)
        memory = r.info("memory")["used_memory_human"]
        print(f"filled {args.jobs:,} failed jobs in {seconds:.1f} s (Redis memory {memory}); "
              f"{PER_PAGE} jobs per page, {args.requests} requests per page")
        last = max(1, -(-args.jobs // PER_PAGE))
        r.config_resetstat()
        print(f"{'page':>12} {'median ms':>10} {'p90 ms':>8} {'commands':>9} "
              f"{'round trips':>11} {'HTML KB':>8}")
        for label, page in (("first", 1), (f"last ({last:,})", last)):
            res = measure(http, r, f"/admin/django_redisq/job/?queue=default&state=failed"
                                   f"&page={page}", args.requests)
            print(f"{label:>12} {res['median_ms']:>10.2f} {res['p90_ms']:>8.2f} "
                  f"{res['commands']:>9.1f} {res['round_trips']:>11.1f} "
                  f"{res['bytes'] / 1024:>8.1f}")
        r.flushdb()
        r.close()
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
