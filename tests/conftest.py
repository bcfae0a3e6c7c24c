"""Test harness: a private redis-server for the session, a clean database per test."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process of our own on a free loopback port, with its own directory."""

    def __init__(self, *extra: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="redisq-test-redis-")
        self.port = _free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed; run scripts/test (it installs it)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no", "--logfile", os.path.join(self.dir, "log"),
             *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.02)  # waiting for a process to start listening

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


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
        if connection.vendor == "sqlite":
            # The subprocess is not in test mode: point it at the test database by name.
            full_env["REDISQ_TEST_SQLITE"] = str(connection.settings_dict["NAME"])
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
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)  # the worker and any children it supervises
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


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.01, message: str = ""):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout} s")
        time.sleep(interval)
