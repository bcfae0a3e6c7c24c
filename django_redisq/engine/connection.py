"""Redis clients for a queue: one thread-safe sync client, one async client per event loop.

redis-py's asyncio clients are bound to the loop that created their connections, so a process
that runs several loops (threads running ``async_to_sync``, tests) gets one client per loop.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aredis


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages, logs and the admin)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisConnection:
    """How to reach one Redis deployment: a URL (standalone), plus client options."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options = options
        self._client: redis.Redis | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"<RedisConnection {self.masked_url}>"

    def client(self) -> redis.Redis:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = redis.Redis.from_url(self.url, **self.options)
        return self._client

    def aclient(self) -> aredis.Redis:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = aredis.Redis.from_url(self.url, **self.options)
            self._aclients[loop] = client
        return client

    def new_aclient(self, **overrides: Any) -> aredis.Redis:
        """A private async client (its own pool), e.g. for a connection that blocks."""
        return aredis.Redis.from_url(self.url, **{**self.options, **overrides})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def fork_reset(self) -> None:
        """Forget clients inherited through ``fork()``; the child makes its own."""
        self._client = None
        self._aclients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
