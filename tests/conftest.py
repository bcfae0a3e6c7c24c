"""Test harness: a private redis-server for the session, a clean database per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.infra import Server, free_port

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["django_redisq.pytest_plugin"]


_free_port = free_port  # the name the test modules import


class RedisServer(Server):
    """A redis-server of our own on a free loopback port, with its own directory and no
    persistence unless ``extra`` asks for it (later arguments win)."""

    def __init__(self, *extra: str) -> None:
        super().__init__("--save", "", "--appendonly", "no", *extra)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _redisq_settings(redis_server: RedisServer) -> Iterator[None]:
    """Point REDISQ at the private server, in this process and in worker subprocesses."""
    from django.conf import settings

    from django_redisq import conf

    os.environ["REDISQ_TEST_REDIS_URL"] = redis_server.url
    original = settings.REDISQ
    settings.REDISQ = {**original, "QUEUES": {
        name: {**q, "URL": redis_server.url} for name, q in original["QUEUES"].items()}}
    conf.clear_cache()
    yield
    settings.REDISQ = original
    conf.clear_cache()


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on the private server, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.config_resetstat()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_redis(r: redis.Redis) -> None:
    """Every test starts with an empty Redis database."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "worker_proc" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


class WorkerProcess:
    """``manage.py rqworker`` as a real subprocess, with its output kept for assertions."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
            prefix="redisq-worker-", suffix=".log", delete=False)
        from django.db import connection

        full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
                    "PYTHONPATH": str(ROOT), **(env or {})}
        # The subprocess is not in test mode: point it at the test database by name.
        if connection.vendor == "sqlite":
            full_env["REDISQ_TEST_SQLITE"] = str(connection.settings_dict["NAME"])
        elif connection.vendor == "postgresql":
            full_env["REDISQ_TEST_PG_NAME"] = str(connection.settings_dict["NAME"])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "rqworker", *args],
            cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker did not exit within {timeout} s:\n{self.output()}") from None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        # The whole process group, even when the worker itself has exited: children it
        # supervised may have outlived it (a supervisor killed with SIGKILL).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 9)
        self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


@pytest.fixture
def worker_proc() -> Iterator[type[WorkerProcess]]:
    """Start real worker subprocesses; any left running are killed at the end of the test."""
    started: list[WorkerProcess] = []

    class Tracked(WorkerProcess):
        def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
            super().__init__(*args, env=env)
            started.append(self)

    yield Tracked
    for w in started:
        w.close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.01, message=""):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value or the deadline passes. ``message``
    may be a callable, to describe the state at the deadline rather than at the call."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(text or f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture
def worker_thread() -> Iterator[Any]:
    """A worker serving "default" and "high" in a thread of this process (so jobs and the
    test share threading events); stopped at the end of the test."""
    from django_redisq.worker import build_worker
    from tests import jobs

    jobs.PROGRESS_REPORTED.clear()
    jobs.PROGRESS_STEP.clear()
    jobs.PROGRESS_GO.clear()
    worker = build_worker(["default", "high"])
    t = threading.Thread(target=lambda: asyncio.run(worker.run()))
    t.start()
    wait_for(lambda: worker._loop is not None, message="the worker thread did not start")
    yield worker
    jobs.PROGRESS_STEP.set()
    jobs.PROGRESS_GO.set()
    worker.stop()
    t.join(30)
    assert not t.is_alive()
