"""Redis clients for a queue: a sync client per thread, one async client per event loop.

A queue's Redis is one of three deployments, each through redis-py's own client:

* a single server, from a URL;
* a master found through Redis Sentinel (``SentinelConfig``): redis-py's Sentinel connection
  pools ask the sentinels for the master's address whenever they (re)connect, so clients
  follow a failover on their next reconnect;
* a Redis Cluster (``ClusterConfig``): redis-py's cluster client routes each command (and each
  script, by its keys) to the node that owns the slot. All keys of one queue share a hash tag,
  so every script of a queue runs on one node.

redis-py's asyncio clients are bound to the loop that created their connections, so a process
that runs several loops (threads running ``async_to_sync``, tests) gets one client per loop.

Each thread's sync client keeps one connection of the shared pool for itself (as Django keeps
a database connection per thread): taking a connection from the pool and giving it back on
every command cost a one-by-one enqueue 14.5 us of CPU and 11 us of wall time (medians, about
a sixth of its CPU). A thread's connection goes back to the pool when the thread ends.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

import redis
import redis.asyncio as aredis
import redis.asyncio.cluster as acluster
import redis.asyncio.sentinel as asentinel
import redis.cluster as scluster
import redis.sentinel as ssentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry as SyncRetry

# Bumped in a forked child: a thread's client made before the fork holds the parent's socket.
_forks = [0]
os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))

#: A sync client of any deployment (both speak the same command methods).
SyncClient = redis.Redis | scluster.RedisCluster
#: An asyncio client of any deployment.
AsyncClient = aredis.Redis | acluster.RedisCluster


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages, logs and the admin): the
    one in the address and a ``password`` query argument (redis-py reads both; a unix socket's
    URL can only give it so)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port out of range
    except ValueError:
        return "<unparsable URL>"
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # IPv6
        if port:
            host = f"{host}:{port}"
        netloc = f"{parts.username or ''}:***@{host}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() == "password" for k, _ in pairs):
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs],
                          safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return join_url(parts._replace(netloc=netloc, query=query))


def join_url(parts: SplitResult) -> str:
    """``urlunsplit`` keeping the ``//`` of a URL with no host (``unix:///path``), which it
    would drop (redis-py reads both, but the URL shown should be the one written)."""
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}{fragment}"


def _hosts(addresses: Sequence[tuple[str, int]]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses)


@dataclass(frozen=True)
class SentinelConfig:
    """Where the sentinels are and which master (service) they watch.

    ``username``/``password`` authenticate to the master (and its replicas);
    ``sentinel_kwargs`` are redis-py connection options for the sentinels themselves (e.g.
    ``{"password": ...}`` when the sentinels require one).
    """

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"sentinel://{_hosts(self.sentinels)}/{self.service_name}/{self.db}"


@dataclass(frozen=True)
class ClusterConfig:
    """Startup nodes of a Redis Cluster (any reachable one is enough; the client learns the
    rest) and the credentials its nodes require."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None

    def describe(self) -> str:
        return f"cluster://{_hosts(self.nodes)}"


def _sentinel_kwargs(config: SentinelConfig, retry_class: Any) -> dict[str, Any]:
    """Options of the connections to the sentinels. redis-py retries a refused connection ten
    times with backoff by default; master discovery already moves on to the next sentinel, so
    a dead sentinel is skipped at once (``SENTINEL_KWARGS`` may say otherwise)."""
    return {"retry": retry_class(NoBackoff(), 0), **config.sentinel_kwargs}


_poll = getattr(select, "poll", None)


def _has_input(conn: Any) -> bool:
    """Whether a connection between commands has anything to read, which makes it unusable:
    the server's end of a closed connection, or the reply of a command whose caller stopped
    before reading it.

    One ``poll()`` of the socket (0.7 us), where redis-py's ``can_read()`` makes three system
    calls (2.8 us): this runs before every command of a sync client. The socket is all there
    is to look at: ``can_read()`` also looks in the parser's buffer, but a read interrupted
    with part of a reply buffered disconnects the connection (redis-py 5.0.1 and later, on
    any exception), so a connected one never holds a stale reply there. Where there is no
    ``poll()`` (Windows), or no socket to poll, ``can_read()``."""
    sock = getattr(conn, "_sock", None)
    if sock is None or _poll is None:
        return bool(conn.can_read())
    p = _poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(0))


class RedisConnection:
    """How to reach one Redis deployment: a URL (standalone), a Sentinel-watched master or a
    Cluster, plus redis-py client options."""

    def __init__(self, url: str = "", *, sentinel: SentinelConfig | None = None,
                 cluster: ClusterConfig | None = None, **options: Any) -> None:
        if sum(bool(x) for x in (url, sentinel, cluster)) != 1:
            raise ValueError("RedisConnection needs exactly one of url, sentinel or cluster")
        self.url = url
        self.sentinel = sentinel
        self.cluster = cluster
        self.options = options
        self._client: SyncClient | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def masked_url(self) -> str:
        """Where Redis is, without secrets: the masked URL, or ``sentinel://...``/
        ``cluster://...`` naming the sentinels or the startup nodes."""
        if self.sentinel is not None:
            return self.sentinel.describe()
        if self.cluster is not None:
            return self.cluster.describe()
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"<RedisConnection {self.masked_url}>"

    # -- making clients -----------------------------------------------------------------------
    def _make(self, options: dict[str, Any]) -> SyncClient:
        if self.sentinel is not None:
            s = self.sentinel
            sentinel = ssentinel.Sentinel(  # type: ignore[no-untyped-call]
                list(s.sentinels), sentinel_kwargs=_sentinel_kwargs(s, SyncRetry))
            return cast(redis.Redis, sentinel.master_for(  # type: ignore[no-untyped-call]
                s.service_name, db=s.db, username=s.username, password=s.password, **options))
        if self.cluster is not None:
            c = self.cluster
            # cast: redis-py before 6 types these constructors loosely (Any)
            return cast(SyncClient, scluster.RedisCluster(
                startup_nodes=[scluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
                               for h, p in c.nodes],
                username=c.username, password=c.password, **options))
        return cast(SyncClient, redis.Redis.from_url(self.url, **options))

    def _amake(self, options: dict[str, Any]) -> AsyncClient:
        if self.sentinel is not None:
            s = self.sentinel
            sentinel = asentinel.Sentinel(  # type: ignore[no-untyped-call]
                list(s.sentinels), sentinel_kwargs=_sentinel_kwargs(s, AsyncRetry))
            return cast(aredis.Redis, sentinel.master_for(
                s.service_name, db=s.db, username=s.username, password=s.password, **options))
        if self.cluster is not None:
            c = self.cluster
            return cast(AsyncClient, acluster.RedisCluster(
                startup_nodes=[acluster.ClusterNode(h, p) for h, p in c.nodes],
                username=c.username, password=c.password, **options))
        return cast(AsyncClient, aredis.Redis.from_url(self.url, **options))

    def client(self) -> SyncClient:
        """This thread's client: on one server or through Sentinel, a client that keeps one
        connection of the shared pool (made, and connected, on the thread's first call); on a
        Cluster, the shared client (its connections are per node)."""
        shared = self._client
        if shared is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make(self.options)
                shared = self._client
        if not isinstance(shared, redis.Redis):
            return shared
        local = self._local
        own = getattr(local, "client", None)
        # A client of a pool this connection closed since, or inherited through fork() (its
        # socket is the parent's), is replaced.
        if own is None or local.shared is not shared or local.forks != _forks[0]:
            own = redis.Redis(connection_pool=shared.connection_pool,
                              single_connection_client=True)
            local.client, local.shared, local.forks = own, shared, _forks[0]
        # What the pool does when it hands out a connection: connect() (through Sentinel, to
        # the master the sentinels name now: a command alone would reconnect to the old
        # address), and one that the server closed (a restart, a timeout) or that holds unread
        # data (a command interrupted before its reply) is replaced.
        conn = own.connection
        if conn is not None:
            try:
                conn.connect()
                if _has_input(conn):
                    raise redis.ConnectionError("the connection holds unread data")
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                conn.disconnect()
                conn.connect()
        return own

    def aclient(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = self._amake(self.options)
            self._aclients[loop] = client
        return client

    def new_aclient(self, **overrides: Any) -> AsyncClient:
        """A private async client (its own pool), e.g. for a connection that blocks.

        Made afresh, so a Sentinel client asks the sentinels for the current master and a
        Cluster client reads the current topology."""
        return self._amake({**self.options, **overrides})

    async def new_pubsub(self) -> tuple[AsyncClient, Any]:
        """A private async client and a Pub/Sub on it, for the worker's wake-up channels.

        On a Cluster, classic ``PUBLISH`` reaches every node, so the Pub/Sub subscribes on one
        node (any), through a plain client on that node: redis-py's async Cluster client has
        Pub/Sub only from 8.0 on. When that node fails, the caller makes a new one (a fresh
        topology)."""
        client = self.new_aclient()
        if isinstance(client, aredis.Redis):
            return client, client.pubsub()
        try:
            await client.initialize()
            node = client.get_random_node()
        except RedisClusterException as exc:  # no startup node answers: not a RedisError
            raise redis.ConnectionError(str(exc)) from exc
        finally:
            await client.aclose()
        # The node's own connection settings (address, credentials, TLS, timeouts), as the
        # Cluster client would connect to it.
        on_node = aredis.Redis(connection_pool=aredis.ConnectionPool(
            connection_class=node.connection_class, **node.connection_kwargs))
        return on_node, on_node.pubsub()

    def on_master(self, pubsub: Any) -> bool:
        """Whether a Pub/Sub from ``new_pubsub()`` is on the node that this loop's commands
        last found to be the master (always true but on Sentinel).

        After a failover the commands follow the new master (a demoted node answers writes
        with READONLY, and redis-py reconnects through the sentinels), but a Pub/Sub stays on
        the old node while its connection lives, and a demotion by ``REPLICAOF`` keeps it
        alive: what the new master published before the old node caught up with it never
        reaches that Pub/Sub."""
        if self.sentinel is None:
            return True
        conn = getattr(pubsub, "connection", None)
        client = self._aclients.get(asyncio.get_running_loop())
        if conn is None or client is None:
            return True
        master = getattr(getattr(client, "connection_pool", None), "master_address", None)
        return master is None or tuple(master) == (conn.host, conn.port)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def fork_reset(self) -> None:
        """Forget clients inherited through ``fork()``; the child makes its own."""
        self._client = None
        self._aclients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._local = threading.local()
