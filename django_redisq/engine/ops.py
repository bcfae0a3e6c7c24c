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


class Driver:
    """Runs steps against a Redis deployment; wraps connection errors with a clear message."""

    def __init__(self, describe: Callable[[], str]) -> None:
        self._describe = describe

    def _unavailable(self, exc: Exception) -> RedisUnavailable:
        return RedisUnavailable(f"Redis is unreachable for {self._describe()}: {exc}")

    # -- sync ---------------------------------------------------------------------------------
    def drive(self, client: redis.Redis, steps: Steps[T]) -> T:
        try:
            op = next(steps)
            while True:
                op = steps.send(self._execute(client, op))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if isinstance(exc, RedisUnavailable):
                raise
            raise self._unavailable(exc) from exc

    def _execute(self, client: redis.Redis, op: Op) -> Any:
        if isinstance(op, Batch):
            return op.parse(self._execute_batch(client, op))
        if isinstance(op, Call):
            try:
                raw = client.execute_command(*op.command())
            except NoScriptError:
                client.script_load(op.script.source)
                raw = client.execute_command(*op.command())
            return op.parse(raw)
        return op.parse(client.execute_command(*op.command(), **op.options))

    def _execute_batch(self, client: redis.Redis, batch: Batch) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for op in batch.ops:
            assert not isinstance(op, Batch)
            pipe.execute_command(*op.command(), **getattr(op, "options", {}))
        replies = pipe.execute(raise_on_error=False)
        out = []
        for op, reply in zip(batch.ops, replies):
            if isinstance(reply, NoScriptError) and isinstance(op, Call):
                client.script_load(op.script.source)
                reply = client.execute_command(*op.command())
            elif isinstance(reply, Exception):
                raise reply
            out.append(op.parse(reply))
        return out

    # -- async --------------------------------------------------------------------------------
    async def adrive(self, client: aredis.Redis, steps: Steps[T]) -> T:
        try:
            op = next(steps)
            while True:
                op = steps.send(await self._aexecute(client, op))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if isinstance(exc, RedisUnavailable):
                raise
            raise self._unavailable(exc) from exc

    async def _aexecute(self, client: aredis.Redis, op: Op) -> Any:
        if isinstance(op, Batch):
            return op.parse(await self._aexecute_batch(client, op))
        if isinstance(op, Call):
            try:
                raw = await client.execute_command(*op.command())
            except NoScriptError:
                await client.script_load(op.script.source)
                raw = await client.execute_command(*op.command())
            return op.parse(raw)
        return op.parse(await client.execute_command(*op.command(), **op.options))

    async def _aexecute_batch(self, client: aredis.Redis, batch: Batch) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for op in batch.ops:
            assert not isinstance(op, Batch)
            pipe.execute_command(*op.command(), **getattr(op, "options", {}))
        replies = await pipe.execute(raise_on_error=False)
        out = []
        for op, reply in zip(batch.ops, replies):
            if isinstance(reply, NoScriptError) and isinstance(op, Call):
                await client.script_load(op.script.source)
                reply = await client.execute_command(*op.command())
            elif isinstance(reply, Exception):
                raise reply
            out.append(op.parse(reply))
        return out
