"""``@job``: make a plain or ``async def`` function enqueueable.

The decorated object still runs the function when called. ``.delay()`` checks the arguments
against the signature and the serializer *in the caller*, then sends the job (after the current
transaction commits when ``ENQUEUE_ON_COMMIT`` is on).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from django.db import transaction

from . import conf
from .engine.cron import CronError, CronExpr
from .engine.job import Job
from .engine.limits import KeySpec, Limits, make_limits
from .engine.queue import Prepared
from .engine.registry import function_name, registry
from .engine.retry import Retry

P = ParamSpec("P")
R = TypeVar("R")

_UNSET: Any = object()
_OPTION_NAMES = ("queue", "delay", "at", "priority", "job_id", "timeout", "retry", "result_ttl",
                 "failure_ttl", "on_commit", "meta", "depends_on", "run_anyway")


def check_timeout(timeout: Any, where: str) -> None:
    """``ValueError`` unless ``timeout`` is ``None`` (the queue's ``DEFAULT_TIMEOUT``) or a
    finite positive number of seconds. Infinity and NaN pass a plain ``> 0`` test (NaN fails
    every comparison) and would only fail in the worker; ``True`` is an int but no timeout."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 0 < timeout < math.inf:
        raise ValueError(
            f"{where}(timeout=...) must be a finite positive number of seconds, got "
            f"{timeout!r}; for a long job give a long timeout (e.g. 86400 for a day), or "
            f"leave it out to use the queue's DEFAULT_TIMEOUT")


class JobFunction(Generic[P, R]):
    """A registered job function. ``R`` is the job's result type (what ``Job.get()`` returns)."""

    def __init__(self, func: Callable[..., Any], name: str, options: dict[str, Any],
                 limits: Limits | None = None) -> None:
        self.func = func
        self.name = name
        self.options = options
        self.is_async = inspect.iscoroutinefunction(func)
        self.signature = inspect.signature(func)
        #: Names of the positional parameters, for errors that name an argument.
        self._positional = [
            p.name for p in self.signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        #: Concurrency and rate limits, enforced by workers (``None``: none).
        self.limits = limits
        functools.update_wrapper(cast(Any, self), func)

    def __repr__(self) -> str:
        return f"<job {self.name} queue={self.queue_name}>"

    @property
    def queue_name(self) -> str:
        return str(self.options.get("queue") or "default")

    def using(
        self,
        *,
        queue: str = _UNSET,
        delay: float | timedelta | None = _UNSET,
        at: datetime | None = _UNSET,
        priority: int = _UNSET,
        job_id: str | None = _UNSET,
        timeout: float | None = _UNSET,
        retry: Retry | None = _UNSET,
        result_ttl: float | None = _UNSET,
        failure_ttl: float | None = _UNSET,
        on_commit: bool | None = _UNSET,
        meta: dict[str, Any] | None = _UNSET,
        depends_on: Sequence[Job[Any] | str] | None = _UNSET,
        run_anyway: bool = _UNSET,
    ) -> JobFunction[P, R]:
        """A copy with other enqueue options, e.g. ``send.using(delay=60).delay(user.pk)``."""
        given = {k: v for k, v in locals().items() if k in _OPTION_NAMES and v is not _UNSET}
        check_timeout(given.get("timeout"), f"{self.name}.using")
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.options = {**self.options, **given}
        return clone

    # -- enqueueing ---------------------------------------------------------------------------
    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> Prepared:
        """Check and encode a call without sending it; raises ``TypeError`` on bad arguments."""
        return self._prepare(args, kwargs)

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                 outbox: str | None = None) -> Prepared:
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        opts = self.options
        queue = conf.get_queue(self.queue_name)  # settings are read at enqueue time
        try:
            return queue.prepare(
                self.name, args, kwargs,
                job_id=opts.get("job_id"), delay=opts.get("delay"), at=opts.get("at"),
                priority=opts.get("priority") or 0, timeout=opts.get("timeout"),
                retry=opts.get("retry"), result_ttl=opts.get("result_ttl"),
                failure_ttl=opts.get("failure_ttl"), meta=opts.get("meta"),
                arg_names=self._positional, depends_on=opts.get("depends_on"),
                run_anyway=bool(opts.get("run_anyway")), outbox=outbox,
                limits=self.limits,
            )
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Enqueue a call. Inside ``transaction.atomic()`` (with ``ENQUEUE_ON_COMMIT``) the job
        is sent when the transaction commits, and never if it rolls back; the handle's
        ``status`` is ``None`` until then. On a queue with ``"OUTBOX": True`` the job is
        written to the outbox table in the transaction, so a crash right after the commit
        cannot lose it."""
        if self._eager():
            return self._run_eager(self.prepare(*args, **kwargs))
        # ``.using(on_commit=False)`` sends at once, even inside a transaction.
        on_commit = self.options.get("on_commit")
        in_atomic = on_commit is not False and transaction.get_connection().in_atomic_block
        if in_atomic and conf.uses_outbox(self.queue_name):
            from . import outbox

            token = outbox.new_token()
            return outbox.enqueue(self._prepare(args, kwargs, outbox=token), token, self.name)
        prepared = self._prepare(args, kwargs)
        if in_atomic and (conf.redisq_settings().enqueue_on_commit if on_commit is None
                          else on_commit):
            transaction.on_commit(prepared.send)
            return Job(prepared.queue, prepared.id)
        return prepared.send()

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """``delay()`` for async code: the job is sent with the asyncio Redis client."""
        prepared = self.prepare(*args, **kwargs)
        if self._eager():
            from .testing import arun_eager

            return await arun_eager(prepared)
        return await prepared.asend()

    # Alias kept for django-rq users.
    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return self.delay(*args, **kwargs)

    # -- eager mode (REDISQ["MODE"] = "eager") ------------------------------------------------
    def _eager(self) -> bool:
        return conf.redisq_settings().mode == "eager"

    def _run_eager(self, prepared: Prepared) -> Job[R]:
        from .testing import run_eager

        return run_eager(prepared)


class SyncJobFunction(JobFunction[P, R]):
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)  # type: ignore[no-any-return]


class AsyncJobFunction(JobFunction[P, R]):
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        return self.func(*args, **kwargs)  # type: ignore[no-any-return]


class _Decorator(Protocol):
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncJobFunction[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncJobFunction[P, R]: ...


@overload
def job(  # type: ignore[overload-overlap]
    func: Callable[P, Coroutine[Any, Any, R]], /
) -> AsyncJobFunction[P, R]: ...


@overload
def job(func: Callable[P, R], /) -> SyncJobFunction[P, R]: ...


@overload
def job(
    queue: str = "default",
    /,
    *,
    timeout: float | None = None,
    retry: Retry | None = None,
    priority: int = 0,
    result_ttl: float | None = None,
    failure_ttl: float | None = None,
    on_commit: bool | None = None,
    name: str | None = None,
    cron: str | None = None,
    limit_key: KeySpec | None = None,
    max_concurrency: int | None = None,
    rate_limit: str | None = None,
    rate_burst: int | None = None,
) -> _Decorator: ...


def job(
    func_or_queue: Any = None,
    /,
    *,
    queue: str | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    priority: int = 0,
    result_ttl: float | None = None,
    failure_ttl: float | None = None,
    on_commit: bool | None = None,
    name: str | None = None,
    cron: str | None = None,
    limit_key: KeySpec | None = None,
    max_concurrency: int | None = None,
    rate_limit: str | None = None,
    rate_burst: int | None = None,
) -> Any:
    """Register a function as a job: ``@job``, ``@job("high")``, ``@job("high", timeout=30)``.

    Limits, enforced by every worker of the queue through Redis: ``max_concurrency`` jobs of
    one ``limit_key`` run at once, and ``rate_limit`` (``"N/s"``, ``"N/m"``, ``"N/h"``, bursts
    of ``rate_burst``) caps how often they start. ``limit_key`` is a str, or a function of the
    job's arguments (taken by parameter name) that returns one, called at enqueue; without it
    the limits apply to the function as a whole.

    Raises ``ValueError`` at decoration time for functions a worker could not find by name
    (lambdas, functions defined inside functions) and for invalid options.
    """
    if callable(func_or_queue):
        return job()(func_or_queue)
    queue_name = queue or func_or_queue or "default"
    if not isinstance(queue_name, str):
        raise TypeError(f"@job's first argument is a queue name (str), got {queue_name!r}")
    check_timeout(timeout, "@job")
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"@job(retry=...) takes a django_redisq.Retry, got {retry!r}")
    if not isinstance(priority, int) or not -100 <= priority <= 100:
        raise ValueError(
            f"@job(priority=...) must be an integer from -100 to 100, got {priority!r}")
    if cron is not None:
        # Parsed now, as every option is checked at decoration: a bad or never-matching
        # expression would otherwise only fail in the worker's scheduler.
        if not isinstance(cron, str):
            raise TypeError(f"@job(cron=...) takes a cron expression (str) such as "
                            f"'*/5 * * * *', got {cron!r}")
        try:
            CronExpr.parse(cron)
        except CronError as exc:
            raise CronError(f"@job(cron=...): {exc}") from None
    options = {"queue": queue_name, "timeout": timeout, "retry": retry, "priority": priority,
               "result_ttl": result_ttl, "failure_ttl": failure_ttl, "on_commit": on_commit,
               "cron": cron}

    def decorate(func: Callable[..., Any]) -> JobFunction[Any, Any]:
        if isinstance(func, JobFunction):
            raise TypeError(f"{func.name} is already a job; apply @job once")
        if not callable(func):
            raise TypeError(f"@job decorates a function, got {func!r}")
        job_name = name or function_name(func)
        if cron is not None:
            try:  # a tick calls the function without arguments
                inspect.signature(func).bind()
            except TypeError as exc:
                raise TypeError(f"@job(cron=...) on {job_name}: its ticks call it without "
                                f"arguments, but {exc}; give its parameters defaults, or "
                                f'use REDISQ["CRON"] with "args"') from None
        limits = make_limits(job_name, inspect.signature(func), limit_key=limit_key,
                             max_concurrency=max_concurrency, rate_limit=rate_limit,
                             rate_burst=rate_burst)
        cls = AsyncJobFunction if inspect.iscoroutinefunction(func) else SyncJobFunction
        given = {k: v for k, v in options.items() if v is not None}
        jf: JobFunction[Any, Any] = cls(func, job_name, given, limits)
        registry.register(func, job_name, job=jf, limits=limits)
        return jf

    return decorate
