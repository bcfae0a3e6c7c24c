"""pytest fixtures for projects that use django-redisq (needs pytest-django).

Enable them in your top-level ``conftest.py``::

    pytest_plugins = ["django_redisq.pytest_plugin"]

Fixtures:

* ``redisq_eager``: ``REDISQ["MODE"] = "eager"`` for one test, so ``.delay()`` runs the job
  at once and returns a finished handle; no worker and no Redis needed.
* ``redisq_run_jobs``: the ``django_redisq.testing.run_jobs`` function, to drain real queues
  in the test's process (needs a reachable Redis). ``redisq_run_jobs()`` runs every
  configured queue until empty; ``redisq_run_jobs(["high"], until_empty=False)`` runs the jobs
  queued in ``high`` now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def redisq_eager(settings: Any) -> Iterator[None]:
    """Run enqueued jobs at once, in the test's process (``REDISQ["MODE"] = "eager"``)."""
    current = getattr(settings, "REDISQ", None) or {}
    settings.REDISQ = {**current, "MODE": "eager"}
    yield


@pytest.fixture
def redisq_run_jobs() -> Callable[..., Any]:
    """``run_jobs(queues=None, until_empty=True)``: run queued jobs here; returns the counts."""
    from .testing import run_jobs

    return run_jobs
