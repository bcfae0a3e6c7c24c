"""Redis operations described as data, run by one sync and one async driver.

Queue methods are written once, as generators that yield ``Call`` (a script), ``Cmd`` (a plain
command) or ``Batch`` (several of those in one pipeline, one round trip) and receive the parsed
replies. ``drive`` runs such a generator on a sync client, ``adrive`` on an asyncio client, so
the sync and async APIs share every line of logic.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    RedisClusterException,
    SlotNotCoveredError,
)

from .connection import AsyncClient, SyncClient
from .errors import RedisUnavailable
from .scripts import Script

T = TypeVar("T")


def _identity(value: Any) -> Any:
    return value


@dataclass
class Call:
    """Run a Lua script by SHA."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]
    parse: Callable[[Any], Any] = _identity

    def command(self) -> tuple[Any, ...]:
        return ("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args)


@dataclass
class Cmd:
    """Run one plain command."""

    args: tuple[Any, ...]
    parse: Callable[[Any], Any] = _identity
    options: dict[str, Any] = field(default_factory=dict)
    #: In a ``Batch``: sent again after scripts of the batch are re-run for NOSCRIPT, on the
    #: same connection as them (``WAIT`` counts the replicas of its connection's writes).
    follows_writes: bool = False

    def command(self) -> tuple[Any, ...]:
        return self.args


@dataclass
class Batch:
    """Several operations in one pipeline (one round trip, not a transaction)."""

    ops: Sequence[Call | Cmd]
    parse: Callable[[list[Any]], Any] = _identity


Op = Call | Cmd | Batch
Steps = Generator[Op, Any, T]


def one(op: Op) -> Steps[Any]:
    """Steps of a single operation, returning its parsed reply."""
    reply = yield op
    return reply


# Primitive requests a driver performs: ("cmd", args, options), ("load", source) and
# ("pipe", [(args, options), ...]). Everything else (parsing, NOSCRIPT recovery, batch error
# checks) happens once, in ``_requests``, for both drivers.
Request = tuple[Any, ...]


def _op_requests(op: Op) -> Generator[Request, Any, Any]:
    if isinstance(op, Batch) and len(op.ops) == 1:
        # One operation: a plain command costs less than a pipeline of one (redis-py's
        # pipeline machinery), and a worker's flush is often just one outcome.
        return op.parse([(yield from _op_requests(op.ops[0]))])
    if isinstance(op, Batch):
        replies = list((yield ("pipe", [(o.command(), getattr(o, "options", {}))
                                        for o in op.ops])))
        missing = [i for i, (o, reply) in enumerate(zip(op.ops, replies))
                   if isinstance(reply, NoScriptError) and isinstance(o, Call)]
        if missing:
            # Redis restarted, failed over or flushed its scripts: load them, then send the
            # failed calls again in one pipeline, followed by the commands that must follow
            # them on their connection (WAIT).
            for source in dict.fromkeys(op.ops[i].script.source for i in missing):  # type: ignore[union-attr]
                yield ("load", source)
            again = missing + [i for i, o in enumerate(op.ops)
                               if isinstance(o, Cmd) and o.follows_writes]
            redo = yield ("pipe", [(op.ops[i].command(), getattr(op.ops[i], "options", {}))
                                   for i in again])
            for i, reply in zip(again, redo):
                replies[i] = reply
        out = []
        for o, reply in zip(op.ops, replies):
            if isinstance(reply, Exception):
                raise reply
            out.append(o.parse(reply))
        return op.parse(out)
    if isinstance(op, Call):
        try:
            raw = yield ("cmd", op.command(), {})
        except NoScriptError:  # Redis restarted or flushed its scripts: load, then retry once
            yield ("load", op.script.source)
            raw = yield ("cmd", op.command(), {})
        return op.parse(raw)
    return op.parse((yield ("cmd", op.command(), op.options)))


def _requests(steps: Steps[T]) -> Generator[Request, Any, T]:
    """The primitive requests of a whole generator of steps."""
    op = next(steps)
    while True:
        reply = yield from _op_requests(op)
        try:
            op = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


#: What a Cluster client of redis-py 8.2 or later raises when no node answers its topology
#: refresh. Older versions raise the base class, with "connect" in the message; the base
#: class's other subclasses are bad commands, not outages.
_CLUSTER_UNREACHABLE: type[BaseException] | tuple[()] = getattr(
    redis.exceptions, "RedisClusterUnreachableError", ())


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the deployment cannot serve us now (rather than a bad command):
    a lost or refused connection, a timeout, no master known to the sentinels, a master
    without the replicas ``min-replicas-to-write`` asks for or demoted while we waited on it,
    a Cluster that is down or has no reachable node."""
    if isinstance(exc, RedisUnavailable):
        return False
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, ClusterDownError,
                        MasterDownError, SlotNotCoveredError)):
        return True
    if isinstance(exc, redis.ReadOnlyError):
        return True  # READONLY: a master demoted by a failover, or a URL naming a replica
    if isinstance(exc, redis.ResponseError):
        head = str(exc)[:40]
        # NOREPLICAS: min-replicas-to-write, a master cut off from its replicas refuses writes.
        # UNBLOCKED: a blocking command (WAIT, BLMOVE) on a master demoted to a replica by a
        # failover; its writes may not be on the new master.
        return "NOREPLICAS" in head or "UNBLOCKED" in head
    if isinstance(exc, _CLUSTER_UNREACHABLE):
        return True
    return type(exc) is RedisClusterException and "connect" in str(exc).lower()


_FAILURES = (redis.RedisError, RedisClusterException)


def _lost_transport(exc: BaseException) -> bool:
    """CPython's selector transport (before 3.13.6/3.14, cpython#136234) raises TypeError or
    AttributeError from ``writelines`` on a connection already lost: a lost connection, not
    a bug of ours, so it becomes ``RedisUnavailable`` and the caller retries."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    # Also redis-py's own asyncio connection, whose writer is None once the connection is
    # gone (AttributeError "'NoneType' object has no attribute 'writelines'", seen on 3.11).
    return tb is not None and tb.tb_frame.f_code.co_filename.replace("\\", "/").endswith(
        ("asyncio/selector_events.py", "redis/asyncio/connection.py"))


class Driver:
    """Runs steps against a Redis deployment; wraps connection errors with a clear message."""

    def __init__(self, describe: Callable[[], str]) -> None:
        self._describe = describe

    def _unavailable(self, exc: Exception) -> RedisUnavailable:
        return RedisUnavailable(f"Redis is unreachable for {self._describe()}: {exc}")

    def drive(self, get_client: Callable[[], SyncClient], steps: Steps[T]) -> T:
        """Run ``steps`` on the client ``get_client()`` returns (called here, so that a client
        that connects when made, as a Cluster client does, fails as RedisUnavailable too)."""
        io = _requests(steps)
        try:
            client = get_client()
            req = next(io)
            while True:
                try:
                    result = self._perform(client, req)
                except NoScriptError as exc:
                    req = io.throw(exc)
                else:
                    req = io.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except _FAILURES as exc:
            if not _unreachable(exc):
                raise
            raise self._unavailable(exc) from exc

    def call(self, get_client: Callable[[], SyncClient], call: Call) -> Any:
        """``drive(get_client, one(call))`` without the generators: the path of a one-by-one
        enqueue, where each Python step costs several times its tight-loop time (the caches
        are cold after every round trip). The generators cost an enqueue 6.4 us of CPU and
        4.9 us of wall time (paired medians)."""
        try:
            client = get_client()
            try:
                raw = client.execute_command(*call.command())
            except NoScriptError:  # as in _op_requests: load, then retry once
                client.script_load(call.script.source)
                raw = client.execute_command(*call.command())
        except _FAILURES as exc:
            if not _unreachable(exc):
                raise
            raise self._unavailable(exc) from exc
        return call.parse(raw)

    @staticmethod
    def _perform(client: SyncClient, req: Request) -> Any:
        if req[0] == "cmd":
            return client.execute_command(*req[1], **req[2])
        if req[0] == "load":
            return client.script_load(req[1])
        pipe = client.pipeline(transaction=False)
        for args, options in req[1]:
            pipe.execute_command(*args, **options)
        return pipe.execute(raise_on_error=False)

    async def adrive(self, get_client: Callable[[], AsyncClient], steps: Steps[T]) -> T:
        io = _requests(steps)
        try:
            client = get_client()
            req = next(io)
            while True:
                try:
                    result = await self._aperform(client, req)
                except NoScriptError as exc:
                    req = io.throw(exc)
                else:
                    req = io.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except _FAILURES as exc:
            if not _unreachable(exc):
                raise
            raise self._unavailable(exc) from exc
        except (TypeError, AttributeError) as exc:
            if not _lost_transport(exc):
                raise
            raise self._unavailable(exc) from exc

    @staticmethod
    async def _aperform(client: AsyncClient, req: Request) -> Any:
        if req[0] == "cmd":
            return await client.execute_command(*req[1], **req[2])
        if req[0] == "load":
            return await client.script_load(req[1])
        pipe = client.pipeline(transaction=False)
        for args, options in req[1]:
            pipe.execute_command(*args, **options)
        return await pipe.execute(raise_on_error=False)
