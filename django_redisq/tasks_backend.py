"""A ``django.tasks`` backend (Django 6.0+): ``@task`` functions run on ``manage.py rqworker``.

.. code-block:: python

    TASKS = {
        "default": {
            "BACKEND": "django_redisq.tasks_backend.RedisQBackend",
            "QUEUES": ["default", "high"],             # REDISQ queue names
            "OPTIONS": {"ENQUEUE_ON_COMMIT": True},    # default: REDISQ["ENQUEUE_ON_COMMIT"]
        }
    }

How a task reaches a worker. A job's payload names its function, and a worker runs only
functions in its registry; it never imports a module because a payload named it. A ``Task``
object is built when its module is imported (``@task`` validates it through this backend), and
validation registers a small runner for it under ``task:<module path>`` (once per declared
task: the variants ``.using()`` builds share it, and each job carries its own options).
Workers import the modules of installed apps' ``tasks``/``jobs`` and ``REDISQ["IMPORTS"]`` at
start, so a task declared there (with this backend) is registered in every worker; a job
naming any other task fails with a clear "not registered" error.

Mapping. The job id is the ``TaskResult.id``; job states map to ``TaskResultStatus`` (queued,
scheduled, deferred: READY; started: RUNNING; finished: SUCCESSFUL; failed, canceled: FAILED).
Priorities have the same range and meaning (higher runs sooner). ``run_after`` schedules the
job (``at=``). ``queue_name`` is the REDISQ queue. A ``TaskResult``'s task has the job's own
queue, priority, ``run_after`` and backend. ``task_finished`` is sent once per attempt that
ends, with the status the stored result takes (see "task_finished, once per attempt" below).
"""

from __future__ import annotations

import django

if django.VERSION < (6, 0):
    raise ImportError(
        "django_redisq.tasks_backend implements the django.tasks API, which needs Django 6.0 or "
        f"later; this is Django {django.get_version()}. Upgrade Django, or enqueue with "
        "django_redisq's @job decorator (it works on Django 5.2)."
    )

import asyncio
import builtins
import inspect
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import transaction
from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from .engine import errors as engine_errors
from .engine.context import JobContext, current_job
from .engine.errors import JobTimeout, QueueNotFound, RedisQError
from .engine.job import JobRecord, codec, ms_to_datetime
from .engine.queue import Prepared, Queue
from .engine.registry import registry
from .engine.retry import Retry, class_path
from .signals import job_failed

#: Registered job names of tasks start with this, then the task's module path.
PREFIX = "task:"

STATUS = {
    "queued": TaskResultStatus.READY,
    "scheduled": TaskResultStatus.READY,
    "deferred": TaskResultStatus.READY,
    "started": TaskResultStatus.RUNNING,
    "finished": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "canceled": TaskResultStatus.FAILED,
}

OPTIONS = {"ENQUEUE_ON_COMMIT": (bool, "True or False")}

_UNSET: Any = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisQTask(Task):  # type: ignore[type-arg]
    """A ``Task`` with the engine's own options, the backend's ``task_class``.

    On Django 6.1+, ``@task(retry=..., timeout=..., job_id=...)`` passes them here; on 6.0,
    set them with ``.using(...)``. ``retry`` is a :class:`django_redisq.Retry`; ``timeout`` is
    in seconds; ``job_id`` makes the task unique: a string (one active job of this task at a
    time) or a function of the task's arguments returning one (one per argument value). While
    a job with that id is queued, scheduled or running, enqueueing again sends nothing (and
    no ``task_enqueued``) and returns that job's result.
    """

    retry: Retry | None = None
    timeout: float | None = None
    job_id: str | Callable[..., str] | None = None

    def using(  # type: ignore[override]
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | None = None,
        backend: str | None = None,
        retry: Retry | None = _UNSET,
        timeout: float | None = _UNSET,
        job_id: str | Callable[..., str] | None = _UNSET,
    ) -> RedisQTask:
        """Django's ``using`` plus the engine's options (``None`` clears one)."""
        task: Task[Any, Any] = Task.using(self, priority=priority, queue_name=queue_name,
                                          run_after=run_after, backend=backend)
        changes: dict[str, Any] = {name: value for name, value in
                   (("retry", retry), ("timeout", timeout), ("job_id", job_id))
                   if value is not _UNSET}
        return replace(task, **changes) if changes else task  # type: ignore[return-value]


def _validate_options(task: RedisQTask) -> None:
    """Bad engine options raise ``InvalidTask`` when the task is declared, naming the fix."""
    where = f"Task {task.module_path}"
    if task.retry is not None and not isinstance(task.retry, Retry):
        raise InvalidTask(f"{where}: retry must be a django_redisq.Retry, e.g. "
                          f"retry=Retry(max=3, delay=5), got {task.retry!r}.")
    timeout = task.timeout
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout <= 0):
        raise InvalidTask(f"{where}: timeout must be a number of seconds > 0, got {timeout!r}.")
    job_id = task.job_id
    if job_id is None or callable(job_id):
        return
    if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
        raise InvalidTask(f"{where}: job_id must be a non-empty string of at most 200 "
                          f"characters or a function of the task's arguments returning one, "
                          f"got {job_id!r}.")


def job_name(task: Task[..., Any]) -> str:
    """The registered name a task's jobs carry: ``task:<module path>``."""
    return PREFIX + task.module_path


def _exception_path(type_name: str) -> str:
    """The importable dotted path Django wants (``TaskError.exception_class`` imports it) for
    the type an error record names.

    Workers record builtins plainly (``ValueError``) and every other class by its dotted path;
    the engine's Lua scripts record their own errors by bare name (``WorkerDied``,
    ``DependencyFailed``). A bare name is a builtin only when ``builtins`` has that exception;
    otherwise it is the engine's class of that name in ``django_redisq.engine.errors``, or,
    when no such class exists there, ``RedisQError``, the base of the engine's errors, so that
    the path always imports (the name is still in the ``TaskError``'s traceback text).
    """
    if "." in type_name:
        return type_name
    for module, name in ((builtins, "builtins"), (engine_errors, engine_errors.__name__)):
        cls = getattr(module, type_name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            return f"{name}.{type_name}"
    return f"{engine_errors.__name__}.{RedisQError.__qualname__}"


def _datetime(ms: int | None) -> datetime | None:
    value = ms_to_datetime(ms)
    if value is not None and not settings.USE_TZ:
        value = timezone.make_naive(value)
    return value


def _task_error(exc: BaseException) -> TaskError:
    return TaskError(exception_class_path=_exception_path(class_path(type(exc))),
                     traceback="".join(traceback.format_exception(exc)))


def _recorded_error(error: dict[str, Any]) -> TaskError:
    """A ``TaskError`` from an error the engine recorded. Errors the engine raises itself
    (a worker's death, a failed dependency) carry a message but no traceback: the message
    stands in for it, as the last line of a traceback would read."""
    type_name = str(error.get("type") or "Exception")
    text = str(error.get("traceback") or "")
    if not text and error.get("message"):
        text = f"{type_name}: {error['message']}\n"
    return TaskError(exception_class_path=_exception_path(type_name), traceback=text)


def _site_serializer() -> str:
    """The serializer this site chose: the only one besides JSON that job data may use."""
    from .conf import redisq_settings

    return redisq_settings().serializer


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def job_task(task: Task[..., Any], record: JobRecord, alias: str) -> Task[..., Any]:
    """``task`` (as declared) with the options its job was enqueued with: the job's queue,
    priority and ``run_after`` (kept in the job's meta: the engine's ``scheduled_for`` moves
    with retries and rate limits), and the backend alias that enqueued it (``alias`` if that
    one is not configured here).

    Built without ``Task.__post_init__``: the job was validated when it was enqueued, and this
    describes it as it is, even if the backend no longer accepts those values (a queue since
    removed from ``QUEUES``); validation would also re-register the task, and it costs each
    job a signature inspection.
    """
    from django.tasks import task_backends

    meta = record.meta if isinstance(record.meta, dict) else {}
    backend = meta.get("backend")
    if not isinstance(backend, str) or backend not in task_backends.settings:
        backend = alias
    values: dict[str, Any] = {"queue_name": record.queue, "priority": record.priority,
                              "run_after": _datetime(_int(meta.get("run_after"))),
                              "backend": backend}
    if all(getattr(task, name) == value for name, value in values.items()):
        return task
    built: Task[..., Any] = object.__new__(type(task))
    for f in fields(task):
        object.__setattr__(built, f.name, values.get(f.name, getattr(task, f.name)))
    return built


def to_result(record: JobRecord, task: Task[..., Any], alias: str) -> TaskResult[..., Any]:
    """A ``TaskResult`` from a job record (as stored in Redis, or as a worker claimed it).
    ``task`` is the task as declared; the result's task has the job's own options
    (``job_task``)."""
    try:
        args, kwargs = record.call(_site_serializer())
    except RedisQError:
        args, kwargs = [], {}
    errors = [_recorded_error(e) for e in record.errors]
    # One id per attempt (Django counts attempts as len(worker_ids)): a failed attempt's error
    # names its worker; the job names the latest attempt's (and stands in for attempts that
    # left no error, such as a run cut short by its worker's death).
    by_attempt = {e.get("attempt"): e.get("worker") for e in record.errors}
    worker_ids = [str(by_attempt.get(n) or record.worker or "")
                  for n in range(1, record.attempts + 1)]
    started = _datetime(record.started_at)
    task = job_task(task, record, alias)
    result: TaskResult[..., Any] = TaskResult(
        task=task,
        id=record.id,
        status=STATUS.get(record.status, TaskResultStatus.READY),
        enqueued_at=_datetime(record.enqueued_at),
        started_at=started,
        last_attempted_at=started,
        finished_at=_datetime(record.ended_at) if record.is_terminal else None,
        args=args,
        kwargs=kwargs,
        backend=task.backend,
        errors=errors,
        worker_ids=worker_ids,
    )
    if record.status == "finished":
        value = codec(record.serializer, _site_serializer()).loads(record.result or b"null")
        object.__setattr__(result, "_return_value", value)
    return result


# -- task_finished, once per attempt ---------------------------------------------------------
#
# Django sends task_finished "once a Task has finished executing, successfully or otherwise",
# with the finished TaskResult. Here each attempt that ends sends it once, with that attempt's
# outcome, which is the status the stored result takes: SUCCESSFUL only for a value the
# worker will store (it is encoded first), FAILED for an error, a timeout or a cancel. Django
# has no retries: an attempt that fails and will be retried sends FAILED too (its stored
# status goes back to READY, and the next attempt sends task_started and task_finished again),
# so that every task_started is followed by one task_finished. Attempts that end without an
# outcome send nothing, as their worker records none: a worker's death, and a shutdown that
# puts the running job back (that attempt does not count).
#
# Most outcomes are seen by the runner, around the task's function. One is not: a timeout.
# The worker stops waiting for the job and records JobTimeout while a sync task's thread runs
# on (it cannot be stopped), and an async task sees only the CancelledError. For those, the
# worker's ``job_failed`` signal (sent on its loop when it records the failure) sends the
# task_finished, and a thread that returns later sends nothing more.

#: The message of the error the worker records for a job canceled while it ran.
CANCELED_MESSAGE = "the job was canceled while running"


class _Attempt:
    """One attempt of a task's job in this worker: the ``TaskResult`` its signals and its
    context share, and whether ``task_finished`` was sent (by the runner, or by the timeout
    path, whichever ends the attempt first: they may run in two threads)."""

    __slots__ = ("_ended", "_lock", "record", "result", "sender")

    def __init__(self, record: JobRecord, result: TaskResult[..., Any],
                 sender: type[BaseTaskBackend]) -> None:
        self.record = record
        self.result = result
        self.sender = sender
        self._lock = threading.Lock()
        self._ended = False

    def end(self) -> bool:
        """True the first time only: the caller sends ``task_finished``."""
        with self._lock:
            ended, self._ended = self._ended, True
            return not ended


#: Running attempts a timeout may end, by ``id()`` of their job record (the object the
#: worker's ``job_failed`` signal carries; the entry keeps it alive, so the id stays its own).
_attempts: dict[int, _Attempt] = {}
_attempts_lock = threading.Lock()
_RECEIVER_UID = "django_redisq.tasks_backend"


def _add_attempt(attempt: _Attempt) -> None:
    with _attempts_lock:
        if not _attempts:
            _listen(True)
        _attempts[id(attempt.record)] = attempt


def _drop_attempt(attempt: _Attempt) -> None:
    with _attempts_lock:
        if _attempts.get(id(attempt.record)) is attempt:
            del _attempts[id(attempt.record)]
            if not _attempts:
                _listen(False)


def _listen(on: bool) -> None:
    """Connect the timeout receiver only while task attempts run (called under the lock). A
    receiver makes the worker send job events for every job (DjangoHooks.has_events), so
    workers and processes that run no task must not carry one."""
    if on:
        job_failed.connect(_job_timed_out, weak=False, dispatch_uid=_RECEIVER_UID)
    else:
        job_failed.disconnect(dispatch_uid=_RECEIVER_UID)


def _fail(result: TaskResult[..., Any], exc: BaseException) -> None:
    result.errors.append(_task_error(exc))
    object.__setattr__(result, "status", TaskResultStatus.FAILED)
    object.__setattr__(result, "finished_at", timezone.now())


def _job_timed_out(sender: Any, job: Any = None, exc: BaseException | None = None,
                   **kwargs: Any) -> None:
    """``job_failed`` receiver: a task's attempt that the worker ended with ``JobTimeout``
    sends ``task_finished`` (FAILED) now, unless its runner already sent it. Other failures
    are the runner's to report: it saw them. Cheap for other jobs: one type check."""
    if not isinstance(exc, JobTimeout):
        return
    with _attempts_lock:
        attempt = _attempts.get(id(job))
        if attempt is None or attempt.record is not job:
            return
        del _attempts[id(job)]
        if not _attempts:
            _listen(False)
    if attempt.end():
        _fail(attempt.result, exc)
        task_finished.send(sender=attempt.sender, task_result=attempt.result)


def _runner(task: Task[..., Any], sender: type[BaseTaskBackend]) -> Callable[..., Any]:
    """The registered function a worker calls for ``task``'s jobs.

    It sends ``task_started`` and ``task_finished`` (with a ``TaskResult`` of the running job,
    whose task has the job's own options) and passes a ``TaskContext`` first when the task
    ``takes_context``. Errors propagate, so the worker records them as for any job; a return
    value the queue's serializer cannot encode becomes a ``TypeError`` here, before the
    attempt is reported successful.
    """

    def begin() -> tuple[JobContext, _Attempt]:
        ctx = current_job()
        if ctx is None:
            raise RuntimeError(f"{task.module_path} was called outside a django-redisq worker")
        result = to_result(ctx.record, task, task.backend)
        attempt = _Attempt(ctx.record, result, sender)
        _add_attempt(attempt)
        return ctx, attempt

    def encoded(ctx: JobContext, value: Any) -> Any:
        """Django's JSON normalisation, then the check that the worker can store the value
        (NaN, say, is a float but not JSON): the same error the worker would record, raised
        while the attempt can still report it."""
        value = normalize_json(value)
        serializer = ctx.queue.serializer
        try:
            serializer.dumps(value)
        except Exception as exc:
            raise TypeError(
                f"the return value of {task.module_path} (a {type(value).__name__}) cannot be "
                f"encoded with the {serializer.name} serializer: {exc}") from exc
        return value

    def succeeded(ctx: JobContext, result: TaskResult[..., Any], value: Any) -> None:
        if ctx.cancel_requested:
            # Canceled while it ran, yet it returned: the worker records it canceled (a sync
            # job cannot be stopped; an async one may swallow the cancel).
            _fail(result, RedisQError(CANCELED_MESSAGE))
            return
        object.__setattr__(result, "_return_value", value)
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(result, "finished_at", timezone.now())

    def call_args(result: TaskResult[..., Any], args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (TaskContext(task_result=result), *args) if task.takes_context else args

    if inspect.iscoroutinefunction(task.func):
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            ctx, attempt = begin()
            result = attempt.result
            keep = False  # left for the timeout path (see below)
            try:
                try:
                    # The signal too: a cancel or a timeout may arrive while it is sent.
                    await task_started.asend(sender=sender, task_result=result)
                    value = encoded(ctx, await task.func(*call_args(result, args), **kwargs))
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if (ctx.cancel_requested or current is None
                            or current.cancelling() == 0):
                        # A cancel request, or a CancelledError not from a task.cancel() (the
                        # task's own): the worker records the job canceled.
                        if attempt.end():
                            _fail(result, RedisQError(CANCELED_MESSAGE))
                            await task_finished.asend(sender=sender, task_result=result)
                    else:
                        # The worker cancelled the task: its timeout (the worker records
                        # JobTimeout and the job_failed receiver reports it) or its shutdown
                        # (the job is put back, that attempt does not count: nothing to
                        # report). The attempt stays findable until the job's task ends.
                        keep = True
                        current.add_done_callback(lambda _: _drop_attempt(attempt))
                    raise
                except (KeyboardInterrupt, GeneratorExit):
                    raise  # the process or the coroutine is going away: no outcome
                except BaseException as exc:
                    if attempt.end():
                        _fail(result, exc)
                        await task_finished.asend(sender=sender, task_result=result)
                    raise
                if attempt.end():
                    succeeded(ctx, result, value)
                    await task_finished.asend(sender=sender, task_result=result)
                return value
            finally:
                if not keep:
                    _drop_attempt(attempt)

        return run_async

    def run(*args: Any, **kwargs: Any) -> Any:
        ctx, attempt = begin()
        result = attempt.result
        try:
            try:
                # The signal too: a receiver's error fails the job, as the function's would.
                task_started.send(sender=sender, task_result=result)
                value = encoded(ctx, task.func(*call_args(result, args), **kwargs))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                # After a timeout, the attempt has ended already (FAILED, reported by the
                # job_failed receiver): end() is False and nothing more is sent.
                if attempt.end():
                    _fail(result, exc)
                    task_finished.send(sender=sender, task_result=result)
                raise
            if attempt.end():
                succeeded(ctx, result, value)
                task_finished.send(sender=sender, task_result=result)
            return value
        finally:
            _drop_attempt(attempt)

    return run


class RedisQBackend(BaseTaskBackend):
    """Tasks become django-redisq jobs in the REDISQ queues named by ``QUEUES``."""

    task_class = RedisQTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        raw = params.get("QUEUES", ["default"])
        if isinstance(raw, str) or not all(isinstance(q, str) for q in raw):
            raise InvalidTaskBackend(
                f'TASKS["{alias}"]["QUEUES"] must be a list of REDISQ queue names, got {raw!r}.')
        #: The queues in settings order (Django keeps a set); empty means every REDISQ queue.
        self.queue_order: list[str] = list(dict.fromkeys(raw))
        if not isinstance(self.options, dict):
            raise InvalidTaskBackend(f'TASKS["{alias}"]["OPTIONS"] must be a dict.')
        for key, value in self.options.items():
            if key not in OPTIONS:
                raise InvalidTaskBackend(
                    f'TASKS["{alias}"]["OPTIONS"]["{key}"] is not an option of RedisQBackend; '
                    f"valid options: {', '.join(OPTIONS)}.")
            kind, what = OPTIONS[key]
            if not isinstance(value, kind):
                raise InvalidTaskBackend(
                    f'TASKS["{alias}"]["OPTIONS"]["{key}"] must be {what}, got {value!r}.')

    # -- validation ---------------------------------------------------------------------------
    def validate_task(self, task: Task[..., Any]) -> None:
        """Django's checks (module-level function, priority, queue in ``QUEUES``, aware
        ``run_after``, ``context`` first parameter), then register the task's runner, so that a
        worker that imported the task's module can run its jobs."""
        super().validate_task(task)
        if isinstance(task, RedisQTask):
            _validate_options(task)
        # Once per declared task, not per variant: every Task built (each .using()) comes
        # here, and a runner bound to a variant would show that variant's options to jobs
        # enqueued with others. Runners take each job's options from the job (job_task). A
        # new function (a module imported again) registers anew.
        name = job_name(task)
        entry = registry.get(name) if name in registry else None
        declared = entry.options.get("task") if entry is not None else None
        if not (isinstance(declared, Task) and declared.func is task.func
                and declared.takes_context == task.takes_context):
            registry.register(_runner(task, type(self)), name, task=task)

    def _queue(self, task: Task[..., Any]) -> Queue:
        from .conf import get_queue

        try:
            return get_queue(task.queue_name)
        except QueueNotFound as exc:
            raise InvalidTask(
                f"Queue '{task.queue_name}' of task {task.module_path} is not a django-redisq "
                f"queue: {exc}") from None

    def _prepare(self, task: Task[..., Any], args: Sequence[Any],
                 kwargs: dict[str, Any]) -> tuple[Prepared, TaskResult[..., Any]]:
        self.validate_task(task)
        try:
            args = list(normalize_json(list(args)))  # type: ignore[arg-type]
            kwargs = dict(normalize_json(dict(kwargs)))  # type: ignore[arg-type]
        except TypeError as exc:
            raise TypeError(f"{task.module_path}(): arguments must be JSON-serialisable: "
                            f"{exc}") from None
        try:
            bound = (None, *args) if task.takes_context else tuple(args)
            inspect.signature(task.func).bind(*bound, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{task.module_path}(): {exc}") from None
        run_after = task.run_after
        if run_after is not None and timezone.is_naive(run_after):
            run_after = timezone.make_aware(run_after)  # USE_TZ = False: the default time zone
        meta: dict[str, Any] = {"backend": self.alias}
        if run_after is not None:
            # The job's own record of it (for TaskResult.task): the engine's scheduled_for
            # changes when a retry or a rate limit reschedules the job.
            meta["run_after"] = int(run_after.timestamp() * 1000)
        options: dict[str, Any] = {}
        if isinstance(task, RedisQTask):
            options = {"retry": task.retry, "timeout": task.timeout,
                       "job_id": self._job_id(task, args, kwargs)}
        prepared = self._queue(task).prepare(
            job_name(task), args, kwargs, at=run_after, priority=int(task.priority), meta=meta,
            **options)
        result: TaskResult[..., Any] = TaskResult(
            task=task, id=prepared.id, status=TaskResultStatus.READY, enqueued_at=None,
            started_at=None, finished_at=None, last_attempted_at=None, args=list(args),
            kwargs=dict(kwargs), backend=self.alias, errors=[], worker_ids=[])
        return prepared, result

    @staticmethod
    def _job_id(task: RedisQTask, args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
        job_id = task.job_id
        if not callable(job_id):
            return job_id
        value = job_id(*args, **kwargs)
        if not isinstance(value, str) or not value or len(value) > 200:
            raise TypeError(f"{task.module_path}: its job_id function returned {value!r}; it "
                            f"must return a non-empty string of at most 200 characters.")
        return value

    # -- enqueue ------------------------------------------------------------------------------
    def _enqueue_on_commit(self) -> bool:
        on_commit = self.options.get("ENQUEUE_ON_COMMIT")
        if on_commit is None:
            from .conf import redisq_settings

            on_commit = redisq_settings().enqueue_on_commit
        return bool(on_commit)

    def enqueue(self, task: Task[Any, Any], args: Any,
                kwargs: dict[str, Any]) -> TaskResult[Any, Any]:
        """Send the job now, or when the current transaction commits (``ENQUEUE_ON_COMMIT``):
        then ``enqueued_at`` stays ``None`` and ``get_result`` does not find it until the
        commit, and a rollback sends nothing.

        A task with a ``job_id`` whose job is still queued, scheduled or running enqueues
        nothing: the result returned (updated in place at commit) is that job's, and
        ``task_enqueued`` is not sent."""
        prepared, result = self._prepare(task, args, kwargs)

        def send() -> None:
            queue = prepared.queue
            # Prepared.send() hides whether the job was created; the steps behind it say.
            if _created(queue.run(queue._send_replies_steps([prepared]))):
                object.__setattr__(result, "enqueued_at", timezone.now())
                task_enqueued.send(sender=type(self), task_result=result)
            else:
                self._adopt(result, queue.fetch_record(prepared.id))

        if self._enqueue_on_commit() and transaction.get_connection().in_atomic_block:
            transaction.on_commit(send)
        else:
            send()
        return result

    async def aenqueue(self, task: Task[Any, Any], args: Any,
                       kwargs: dict[str, Any]) -> TaskResult[Any, Any]:
        """``enqueue`` with the asyncio Redis client; sent at once (no transaction to wait
        for: async code has none of its own)."""
        prepared, result = self._prepare(task, args, kwargs)
        queue = prepared.queue
        if _created(await queue.arun(queue._send_replies_steps([prepared]))):
            object.__setattr__(result, "enqueued_at", timezone.now())
            await task_enqueued.asend(sender=type(self), task_result=result)
        else:
            self._adopt(result, await queue.afetch_record(prepared.id))
        return result

    def _adopt(self, result: TaskResult[..., Any], record: JobRecord | None) -> None:
        """Nothing was enqueued (the job id is taken by an active job): ``result`` becomes
        that job's. A job that ended and expired in between leaves it as prepared."""
        stored = self._result(result.id, record)
        if stored is None:
            return
        for f in fields(stored):
            object.__setattr__(result, f.name, getattr(stored, f.name))

    # -- results ------------------------------------------------------------------------------
    def _search_queues(self, result_id: Any) -> list[Queue]:
        from .conf import get_queue, queue_names

        if not isinstance(result_id, str) or not result_id or len(result_id) > 200:
            raise TaskResultDoesNotExist(result_id)
        names = self.queue_order or queue_names()
        return [get_queue(n) for n in names]

    def _task_of(self, record: JobRecord) -> Task[..., Any]:
        """The task as declared (``to_result`` gives it the job's own options)."""
        path = record.func[len(PREFIX):]
        task = registry.get(record.func).options.get("task") if record.func in registry else None
        if not isinstance(task, Task):
            # A process that has not imported the task's module (Django's database backend
            # imports it the same way). Only reading results does this; workers never do.
            try:
                task = import_string(path)
            except ImportError as exc:
                raise InvalidTask(f"task result {record.id} is of task {path}, which cannot "
                                  f"be imported here: {exc}") from exc
            if not isinstance(task, Task):
                raise InvalidTask(f"task result {record.id} names {path}, which is not a Task")
        return task

    def _result(self, result_id: str, record: JobRecord | None) -> TaskResult[..., Any] | None:
        if record is None or not record.func.startswith(PREFIX):
            return None
        return to_result(record, self._task_of(record), self.alias)

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        """The result of a task enqueued through this backend: one read per queue searched
        (the backend's ``QUEUES`` in order), until found."""
        for queue in self._search_queues(result_id):
            result = self._result(result_id, queue.fetch_record(result_id))
            if result is not None:
                return result
        raise TaskResultDoesNotExist(result_id)

    async def aget_result(self, result_id: str) -> TaskResult[..., Any]:
        for queue in self._search_queues(result_id):
            result = self._result(result_id, await queue.afetch_record(result_id))
            if result is not None:
                return result
        raise TaskResultDoesNotExist(result_id)

    # -- system checks ------------------------------------------------------------------------
    def check(self, **kwargs: Any) -> list[Any]:
        """``QUEUES`` must name REDISQ queues (``django_redisq.E020``)."""
        from .conf import validate

        messages: list[Any] = list(super().check(**kwargs))
        parsed, problems = validate()
        if any(p.level == "error" for p in problems):
            return messages  # the settings check reports those
        for name in self.queue_order:
            if name not in parsed.queues:
                messages.append(checks.Error(
                    f'TASKS["{self.alias}"]["QUEUES"] names {name!r}, which is not a '
                    f"django-redisq queue (configured: {', '.join(parsed.queues)}).",
                    hint=f'Add {name!r} to {parsed.source}, or remove it from '
                         f'TASKS["{self.alias}"]["QUEUES"].',
                    id="django_redisq.E020"))
        return messages


def _created(replies: list[Any]) -> bool:
    """Whether the enqueue script created the job: it replies ``[0, status]`` when the job id
    is taken by a job still queued, scheduled or running."""
    return bool(int(replies[0][0]))


__all__ = ["PREFIX", "RedisQBackend", "RedisQTask", "job_name", "job_task", "to_result"]
