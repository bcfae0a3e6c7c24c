"""Fixtures of the reliability tests, and a summary of their figures at the end of the run.

These tests take minutes (chaos ≤ 150 s, rolling restart ≤ 60 s, memory soak 1 to 1.5 min), so
they run where ``REDISQ_RELIABILITY=1`` is set (tox sets it in the django52 envs: py310-django52 by
default). Elsewhere they are reported as skipped, with the reason, never as passed.

The figures each test measures are printed in pytest's terminal summary (CI does not run
pytest with ``-s``) and attached to the JUnit report as properties.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import RedisServer

FIGURES = pytest.StashKey[list[tuple[str, list[str]]]]()


@pytest.fixture(autouse=True)
def _reliability_enabled() -> None:
    if os.environ.get("REDISQ_RELIABILITY") != "1":
        pytest.skip("reliability tests (chaos, rolling restart, memory soak; about 4 min) run "
                    "only with REDISQ_RELIABILITY=1, as tox's django52 envs set it")


@pytest.fixture
def report(request: pytest.FixtureRequest, record_testsuite_property: Callable[[str, object], None]
           ) -> Callable[[str, object], None]:
    """``report(name, value)``: a figure shown in the terminal summary and, as a test-suite
    property (per-test properties are not allowed in the xunit2 format), in the JUnit XML."""
    lines: list[str] = []
    request.config.stash.setdefault(FIGURES, []).append((request.node.nodeid, lines))

    def add(name: str, value: object) -> None:
        lines.append(f"{name}: {value}")
        record_testsuite_property(f"{request.node.name}: {name}", str(value))

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    figures = terminalreporter.config.stash.get(FIGURES, [])
    if not figures:
        return
    terminalreporter.section("reliability figures")
    for nodeid, lines in figures:
        terminalreporter.write_line(nodeid)
        for line in lines:
            terminalreporter.write_line(f"    {line}")


@pytest.fixture
def audit_server() -> Iterator[RedisServer]:
    """A second private redis-server where jobs record their runs; never restarted."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aof_server() -> Iterator[RedisServer]:
    """A private redis-server with AOF (fsync every second), which a test may restart."""
    server = RedisServer("--appendonly", "yes", "--appendfsync", "everysec")
    server.start()
    yield server
    server.stop()
