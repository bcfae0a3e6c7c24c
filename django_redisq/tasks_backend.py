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
validation registers a small runner for it under ``task:<module path>``. Workers import the
modules of installed apps' ``tasks``/``jobs`` and ``REDISQ["IMPORTS"]`` at start, so a task
declared there (with this backend) is registered in every worker; a job naming any other task
fails with a clear "not registered" error.

Mapping. The job id is the ``TaskResult.id``; job states map to ``TaskResultStatus`` (queued,
scheduled, deferred: READY; started: RUNNING; finished: SUCCESSFUL; failed, canceled: FAILED).
Priorities have the same range and meaning (higher runs sooner). ``run_after`` schedules the
job (``at=``). ``queue_name`` is the REDISQ queue.
"""

from __future__ import annotations

import django

if django.VERSION < (6, 0):
    raise ImportError(
        "django_redisq.tasks_backend implements the django.tasks API, which needs Django 6.0 or "
        f"later; this is Django {django.get_version()}. Upgrade Django, or enqueue with "
        "django_redisq's @job decorator (it works on Django 5.2)."
    )

import contextlib
import inspect
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
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

from .engine.context import current_job
from .engine.errors import QueueNotFound, RedisQError
from .engine.job import JobRecord, codec, ms_to_datetime
from .engine.queue import Prepared, Queue
from .engine.registry import registry
from .engine.retry import Retry, class_path

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
    a job with that id is queued, scheduled or running, enqueueing again sends nothing and
    returns a result with the same id.
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
    """Our error records name builtins plainly (``ValueError``); Django wants an importable
    dotted path (``builtins.ValueError``)."""
    return type_name if "." in type_name else f"builtins.{type_name}"


def _datetime(ms: int | None) -> datetime | None:
    value = ms_to_datetime(ms)
    if value is not None and not settings.USE_TZ:
        value = timezone.make_naive(value)
    return value


def _task_error(exc: BaseException) -> TaskError:
    return TaskError(exception_class_path=_exception_path(class_path(type(exc))),
                     traceback="".join(traceback.format_exception(exc)))


def _site_serializer() -> str:
    """The serializer this site chose: the only one besides JSON that job data may use."""
    from .conf import redisq_settings

    return redisq_settings().serializer


def to_result(record: JobRecord, task: Task[..., Any], alias: str) -> TaskResult[..., Any]:
    """A ``TaskResult`` from a job record (as stored in Redis, or as a worker claimed it)."""
    try:
        args, kwargs = record.call(_site_serializer())
    except RedisQError:
        args, kwargs = [], {}
    errors = [
        TaskError(exception_class_path=_exception_path(str(e.get("type") or "Exception")),
                  traceback=str(e.get("traceback") or ""))
        for e in record.errors
    ]
    # One id per attempt (Django counts attempts as len(worker_ids)): a failed attempt's error
    # names its worker; the job names the latest attempt's (and stands in for attempts that
    # left no error, such as a run cut short by its worker's death).
    by_attempt = {e.get("attempt"): e.get("worker") for e in record.errors}
    worker_ids = [str(by_attempt.get(n) or record.worker or "")
                  for n in range(1, record.attempts + 1)]
    started = _datetime(record.started_at)
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
        backend=alias,
        errors=errors,
        worker_ids=worker_ids,
    )
    if record.status == "finished":
        value = codec(record.serializer, _site_serializer()).loads(record.result or b"null")
        object.__setattr__(result, "_return_value", value)
    return result


def _runner(task: Task[..., Any], sender: type[BaseTaskBackend]) -> Callable[..., Any]:
    """The registered function a worker calls for ``task``'s jobs.

    It sends ``task_started`` and ``task_finished`` (with a ``TaskResult`` of the running job)
    and passes a ``TaskContext`` first when the task ``takes_context``. Errors propagate, so the
    worker records them as for any job.
    """

    def running() -> TaskResult[..., Any]:
        ctx = current_job()
        if ctx is None:
            raise RuntimeError(f"{task.module_path} was called outside a django-redisq worker")
        return to_result(ctx.record, task, str(ctx.record.meta.get("backend") or task.backend))

    def failed(result: TaskResult[..., Any], exc: BaseException) -> None:
        result.errors.append(_task_error(exc))
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        object.__setattr__(result, "finished_at", timezone.now())

    def succeeded(result: TaskResult[..., Any], value: Any) -> Any:
        value = normalize_json(value)
        object.__setattr__(result, "_return_value", value)
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(result, "finished_at", timezone.now())
        return value

    def call_args(result: TaskResult[..., Any], args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (TaskContext(task_result=result), *args) if task.takes_context else args

    if inspect.iscoroutinefunction(task.func):
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            result = running()
            await task_started.asend(sender=sender, task_result=result)
            try:
                value = succeeded(result, await task.func(*call_args(result, args), **kwargs))
            except Exception as exc:
                failed(result, exc)
                await task_finished.asend(sender=sender, task_result=result)
                raise
            await task_finished.asend(sender=sender, task_result=result)
            return value

        return run_async

    def run(*args: Any, **kwargs: Any) -> Any:
        result = running()
        task_started.send(sender=sender, task_result=result)
        try:
            value = succeeded(result, task.func(*call_args(result, args), **kwargs))
        except Exception as exc:
            failed(result, exc)
            task_finished.send(sender=sender, task_result=result)
            raise
        task_finished.send(sender=sender, task_result=result)
        return value

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
        registry.register(_runner(task, type(self)), job_name(task), task=task)

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
        commit, and a rollback sends nothing."""
        prepared, result = self._prepare(task, args, kwargs)

        def send() -> None:
            prepared.send()
            object.__setattr__(result, "enqueued_at", timezone.now())
            task_enqueued.send(sender=type(self), task_result=result)

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
        await prepared.asend()
        object.__setattr__(result, "enqueued_at", timezone.now())
        await task_enqueued.asend(sender=type(self), task_result=result)
        return result

    # -- results ------------------------------------------------------------------------------
    def _search_queues(self, result_id: Any) -> list[Queue]:
        from .conf import get_queue, queue_names

        if not isinstance(result_id, str) or not result_id or len(result_id) > 200:
            raise TaskResultDoesNotExist(result_id)
        names = self.queue_order or queue_names()
        return [get_queue(n) for n in names]

    def _task_of(self, record: JobRecord) -> Task[..., Any]:
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
        changes: dict[str, Any] = {}
        if task.queue_name != record.queue:
            changes["queue_name"] = record.queue
        if task.priority != record.priority:
            changes["priority"] = record.priority
        if task.backend != self.alias:
            changes["backend"] = self.alias
        if changes:
            # If the backend no longer accepts those, the declared task still describes it.
            with contextlib.suppress(InvalidTask):
                task = task.using(**changes)
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


__all__ = ["PREFIX", "RedisQBackend", "RedisQTask", "job_name", "to_result"]
