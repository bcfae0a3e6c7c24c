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
import redis.asyncio as aredis
from redis.exceptions import NoScriptError

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
    if isinstance(op, Batch):
        replies = yield ("pipe", [(o.command(), getattr(o, "options", {})) for o in op.ops])
        out = []
        for o, reply in zip(op.ops, replies):
            if isinstance(reply, NoScriptError) and isinstance(o, Call):
                yield ("load", o.script.source)
                reply = yield ("cmd", o.command(), {})
            elif isinstance(reply, Exception):
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


class Driver:
    """Runs steps against a Redis deployment; wraps connection errors with a clear message."""

    def __init__(self, describe: Callable[[], str]) -> None:
        self._describe = describe

    def _unavailable(self, exc: Exception) -> RedisUnavailable:
        return RedisUnavailable(f"Redis is unreachable for {self._describe()}: {exc}")

    def drive(self, client: redis.Redis, steps: Steps[T]) -> T:
        io = _requests(steps)
        try:
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
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if isinstance(exc, RedisUnavailable):
                raise
            raise self._unavailable(exc) from exc

    @staticmethod
    def _perform(client: redis.Redis, req: Request) -> Any:
        if req[0] == "cmd":
            return client.execute_command(*req[1], **req[2])
        if req[0] == "load":
            return client.script_load(req[1])
        pipe = client.pipeline(transaction=False)
        for args, options in req[1]:
            pipe.execute_command(*args, **options)
        return pipe.execute(raise_on_error=False)

    async def adrive(self, client: aredis.Redis, steps: Steps[T]) -> T:
        io = _requests(steps)
        try:
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
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if isinstance(exc, RedisUnavailable):
                raise
            raise self._unavailable(exc) from exc

    @staticmethod
    async def _aperform(client: aredis.Redis, req: Request) -> Any:
        if req[0] == "cmd":
            return await client.execute_command(*req[1], **req[2])
        if req[0] == "load":
            return await client.script_load(req[1])
        pipe = client.pipeline(transaction=False)
        for args, options in req[1]:
            pipe.execute_command(*args, **options)
        return await pipe.execute(raise_on_error=False)
