"""Jobs of the demo app. A worker finds them by autodiscovery (every app's ``tasks`` module)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from django.contrib.auth import get_user_model

from django_redisq import Retry, current_job, job


@job
def send_welcome_email(user_id: int) -> str:
    """A plain function on the default queue; it uses the ORM like any Django code."""
    user = get_user_model().objects.get(pk=user_id)
    # A real project would call django.core.mail.send_mail() here.
    return f"welcome email sent to {user.get_username()} <{user.email}>"


@job("high")
async def fetch_title(url: str) -> str:
    """An ``async def`` job: it runs on the worker's event loop, many at once.

    The demo does not touch the network: the request is simulated with ``asyncio.sleep``.
    """
    await asyncio.sleep(0.2)
    return f"Title of {url}"


@job("low", timeout=60)
def resize_image(path: str, width: int = 256) -> str:
    """Fails for a missing file: the job ends ``failed`` with the traceback kept."""
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"no image at {path}")
    return f"resized {source.name} to {width}px"


@job(retry=Retry(max=3, delay=0.2, backoff=2.0, jitter=0))
def sync_inventory(sku: str) -> str:
    """Fails on its first attempt (a simulated timeout), then succeeds on the retry."""
    ctx = current_job()
    attempt = ctx.attempt if ctx else 1
    if attempt < 2:
        raise ConnectionError(f"warehouse API timed out for {sku} (simulated)")
    return f"synced {sku} on attempt {attempt}"


@job("low")
def build_report(n: int) -> int:
    """A little CPU work: the sum of the first ``n`` squares."""
    return sum(i * i for i in range(n))


@job("high", limit_key=lambda user_id: f"mailbox:{user_id}", max_concurrency=1)
async def sync_mailbox(user_id: int, folder: str) -> str:
    """At most one sync per user at a time, across every worker: the others wait (in
    ``deferred``) without holding a worker slot, and start as each one ends."""
    await asyncio.sleep(0.1)
    return f"synced {folder} of user {user_id}"


@job(rate_limit="5/s")
def notify_partner(order_id: int) -> str:
    """At most 5 calls a second to a (simulated) partner API: calls over the rate wait in
    ``scheduled`` for their turn instead of failing."""
    return f"partner notified of order {order_id}"
