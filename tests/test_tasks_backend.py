"""The django.tasks backend (Django 6.0+): @task functions enqueued through Django's API run on
rqworker, and their results read back as Django TaskResults.

On Django 5.2 every test here but one is skipped: django.tasks does not exist there, and the one
left checks that importing the backend says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Iterator
from datetime import datetime, timedelta

import django
import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from django_redisq import Retry, get_queue
from tests.conftest import wait_for

DJANGO_6 = django.VERSION >= (6, 0)
needs_django_6 = pytest.mark.skipif(
    not DJANGO_6, reason=f"django.tasks needs Django 6.0+; this is Django {django.get_version()}")

if DJANGO_6:
    from django.tasks import TaskResultStatus, default_task_backend, task, task_backends
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started

    from django_redisq.tasks_backend import RedisQBackend
    from tests import tasks_django as t

BACKEND = "django_redisq.tasks_backend.RedisQBackend"
#: Worker subprocesses with this write the task signals they send to test:task-signals.
SIGNALS_ENV = {"REDISQ_TEST_TASK_SIGNALS": "1"}
FAST_LEASE = {"REDISQ_TEST_LEASE": "1", "REDISQ_TEST_HEARTBEAT": "0.2"}
TIMEOUT_PATH = "django_redisq.engine.errors.JobTimeout"
REDISQ_ERROR_PATH = "django_redisq.engine.errors.RedisQError"


@contextlib.contextmanager
def signals_seen() -> Iterator[list[str]]:
    """The task_started / task_finished signals sent in this process, as tests.tasks_django
    writes them down."""
    seen: list[str] = []

    def receiver(kind):
        def handler(sender, task_result, **kwargs):
            assert sender is RedisQBackend
            seen.append(t.signal_line(kind, task_result))
        return handler

    started, finished = receiver("started"), receiver("finished")
    task_started.connect(started)
    task_finished.connect(finished)
    try:
        yield seen
    finally:
        task_started.disconnect(started)
        task_finished.disconnect(finished)


def worker_signals(r, name: str) -> list[str]:
    """The signals a worker subprocess sent for the task ``name``."""
    return [line.decode() for line in r.lrange("test:task-signals", 0, -1)
            if line.decode().split()[1] == name]


def burst(*queues: str, concurrency: int | None = None) -> None:
    extra = ["--concurrency", str(concurrency)] if concurrency else []
    call_command("rqworker", *(queues or ("default", "high")), "--burst", *extra, verbosity=0)


@pytest.mark.skipif(DJANGO_6, reason="checks the import error shown on Django < 6.0")
def test_import_on_django_5_says_what_it_needs():
    with pytest.raises(ImportError, match=r"needs Django 6\.0 or later; this is Django 5\.2"):
        importlib.import_module("django_redisq.tasks_backend")


@needs_django_6
class TestRunOnWorker:
    def test_backend_declares_its_features(self):
        backend = task_backends["default"]
        assert isinstance(backend, RedisQBackend)
        assert backend.supports_defer
        assert backend.supports_async_task
        assert backend.supports_get_result
        assert backend.supports_priority

    def test_sync_and_async_tasks_run_and_report_success(self, r):
        before = timezone.now()
        res = t.add.enqueue(1, 2)
        ares = t.async_add.enqueue(3, 4)
        assert res.status == ares.status == TaskResultStatus.READY
        assert res.enqueued_at is not None and res.enqueued_at >= before
        assert res.args == [1, 2] and res.kwargs == {}
        assert res.backend == "default"
        # The result id is the job id, in the task's queue, under the task's registered name.
        job = get_queue("default").job(res.id)
        assert job.status == "queued"
        assert job.record.func == "task:tests.tasks_django.add"
        assert get_queue("high").job(ares.id).status == "queued"
        assert default_task_backend.get_result(res.id).status == TaskResultStatus.READY

        burst()

        res.refresh()
        got = t.async_add.get_result(ares.id)
        assert res.status == got.status == TaskResultStatus.SUCCESSFUL, (res.errors, got.errors)
        assert res.return_value == 3 and got.return_value == 7
        assert res.is_finished
        assert res.attempts == 1 and len(res.worker_ids) == 1 and res.worker_ids[0]
        assert res.errors == []
        assert res.enqueued_at <= res.started_at <= res.finished_at
        assert res.last_attempted_at == res.started_at
        assert got.task.func is t.async_add.func and got.task.queue_name == "high"

    def test_aenqueue_and_aget_result(self, r):
        async def enqueue():
            return await t.async_add.aenqueue(5, 6), await t.add.aenqueue(a=1, b=1)

        ares, kres = asyncio.run(enqueue())
        assert ares.status == TaskResultStatus.READY and ares.enqueued_at is not None
        assert kres.kwargs == {"a": 1, "b": 1}
        burst()

        async def read():
            await ares.arefresh()
            return await t.add.aget_result(kres.id)

        got = asyncio.run(read())
        assert ares.status == TaskResultStatus.SUCCESSFUL and ares.return_value == 11
        assert got.return_value == 2

    def test_return_values_are_normalised_to_json(self, r):
        res = t.pair.enqueue((1, 2))
        assert res.args == [[1, 2]]
        burst()
        res.refresh()
        assert res.return_value == [1, 2]

    def test_raising_tasks_fail_with_class_path_and_traceback(self, r):
        res = t.fail.enqueue("it broke")
        ares = t.async_fail.enqueue()
        burst()
        res.refresh()
        ares.refresh()
        assert res.status == ares.status == TaskResultStatus.FAILED
        assert res.is_finished and res.finished_at is not None
        assert [e.exception_class_path for e in res.errors] == ["builtins.ValueError"]
        assert res.errors[0].exception_class is ValueError
        assert "ValueError: it broke" in res.errors[0].traceback
        assert 'raise ValueError(message)' in res.errors[0].traceback
        assert [e.exception_class_path for e in ares.errors] == ["builtins.KeyError"]
        assert res.attempts == 1
        with pytest.raises(ValueError, match="Task failed"):
            res.return_value  # noqa: B018

    def test_takes_context_gets_the_attempt_and_its_result(self, r):
        res = t.with_context.enqueue("x")
        ares = t.async_with_context.enqueue()
        burst()
        res.refresh()
        ares.refresh()
        assert res.status == TaskResultStatus.SUCCESSFUL, res.errors
        value = res.return_value
        assert value["attempt"] == 1 and value["id"] == res.id and value["tag"] == "x"
        assert value["status"] == TaskResultStatus.RUNNING
        assert value["worker_ids"] == res.worker_ids
        assert ares.return_value == {"attempt": 1, "id": ares.id}

    def test_priority_orders_a_single_slot_worker(self, r):
        low = t.record.using(priority=-10).enqueue("low")
        t.record.enqueue("mid")
        high = t.record.using(priority=50).enqueue("high")
        top = t.record.using(priority=100).enqueue("top")
        assert get_queue("default").job(high.id).record.priority == 50
        assert top.task.priority == 100
        burst("default", concurrency=1)
        assert r.lrange("test:task-record", 0, -1) == [b"top", b"high", b"mid", b"low"]
        assert default_task_backend.get_result(low.id).task.priority == -10

    def test_run_after_in_the_future_schedules_the_job(self, r):
        when = timezone.now() + timedelta(hours=1)
        res = t.add.using(run_after=when).enqueue(1, 1)
        assert res.status == TaskResultStatus.READY
        record = get_queue("default").job(res.id).record
        assert record.status == "scheduled"
        assert abs(record.scheduled_for - int(when.timestamp() * 1000)) <= 1
        burst()  # not due: stays waiting
        assert default_task_backend.get_result(res.id).status == TaskResultStatus.READY
        assert get_queue("default").job(res.id).status == "scheduled"

    def test_run_after_due_soon_runs_when_due(self, r, worker_proc):
        res = t.add.using(run_after=timezone.now() + timedelta(seconds=0.5)).enqueue(2, 2)
        assert get_queue("default").job(res.id).status == "scheduled"
        w = worker_proc("default")
        try:
            record = get_queue("default").wait(res.id, timeout=15)
        finally:
            w.kill()
        assert record.status == "finished", w.output()
        res.refresh()
        assert res.return_value == 4
        assert res.started_at >= res.enqueued_at + timedelta(seconds=0.4)

    def test_worker_subprocess_imports_and_runs_tasks(self, r, worker_proc):
        res = t.add.enqueue(20, 22)
        ares = t.async_with_context.enqueue()
        w = worker_proc("default", "high", "--burst")
        assert w.wait(30) == 0, w.output()
        res.refresh()
        ares.refresh()
        assert res.return_value == 42, w.output()
        assert ares.return_value["attempt"] == 1


@needs_django_6
def test_worker_ids_name_each_attempts_worker():
    """Attempts 1 and 2 failed on w1 and w2 (their errors say so), attempt 3 ran on w3; an
    attempt without an error (its worker died) shows the job's latest worker."""
    from django_redisq.engine.job import JobRecord
    from django_redisq.tasks_backend import to_result

    errors = [{"type": "ValueError", "attempt": 1, "worker": "w1"},
              {"type": "ValueError", "attempt": 2, "worker": "w2"}]
    rec = JobRecord(id="j", queue="default", func="task:tests.tasks_django.add",
                    status="finished", attempts=3, worker="w3", errors=errors)
    assert to_result(rec, t.add, "default").worker_ids == ["w1", "w2", "w3"]
    rec = JobRecord(id="j", queue="default", func="task:tests.tasks_django.add",
                    status="started", attempts=2, worker="w3", errors=[])
    assert to_result(rec, t.add, "default").worker_ids == ["w3", "w3"]


@needs_django_6
class TestSignals:
    def test_enqueued_started_finished(self, r):
        seen: list[tuple[str, str, str]] = []

        def receiver(name):
            def handler(sender, task_result, **kwargs):
                assert sender is RedisQBackend
                seen.append((name, task_result.task.name, str(task_result.status)))
            return handler

        handlers = {"enqueued": receiver("enqueued"), "started": receiver("started"),
                    "finished": receiver("finished")}
        task_enqueued.connect(handlers["enqueued"])
        task_started.connect(handlers["started"])
        task_finished.connect(handlers["finished"])
        try:
            t.add.enqueue(1, 2)
            t.fail.enqueue()
            asyncio.run(t.async_add.aenqueue(1, 2))
            burst()
        finally:
            task_enqueued.disconnect(handlers["enqueued"])
            task_started.disconnect(handlers["started"])
            task_finished.disconnect(handlers["finished"])
        assert sorted(seen) == sorted([
            ("enqueued", "add", "READY"), ("started", "add", "RUNNING"),
            ("finished", "add", "SUCCESSFUL"),
            ("enqueued", "fail", "READY"), ("started", "fail", "RUNNING"),
            ("finished", "fail", "FAILED"),
            ("enqueued", "async_add", "READY"), ("started", "async_add", "RUNNING"),
            ("finished", "async_add", "SUCCESSFUL"),
        ])


@needs_django_6
@pytest.mark.django_db(transaction=True)
class TestEnqueueOnCommit:
    def test_sent_after_commit(self, r):
        with transaction.atomic():
            res = t.add.enqueue(1, 2)
            assert r.dbsize() == 0 and res.enqueued_at is None
            with pytest.raises(TaskResultDoesNotExist):
                default_task_backend.get_result(res.id)
        assert res.enqueued_at is not None
        assert default_task_backend.get_result(res.id).status == TaskResultStatus.READY

    def test_rollback_sends_nothing(self, r):
        with pytest.raises(RuntimeError), transaction.atomic():
            t.add.enqueue(1, 2)
            raise RuntimeError
        assert r.dbsize() == 0

    def test_option_off_sends_at_once(self, r):
        tasks = {"default": {"BACKEND": BACKEND, "QUEUES": ["default", "high"],
                             "OPTIONS": {"ENQUEUE_ON_COMMIT": False}}}
        with override_settings(TASKS=tasks), transaction.atomic():
            res = t.add.enqueue(1, 2)
            assert get_queue("default").job(res.id).status == "queued"


@needs_django_6
class TestValidation:
    def test_queue_not_in_backend_queues(self):
        with pytest.raises(InvalidTask, match="Queue 'nowhere' is not valid for backend"):
            t.add.using(queue_name="nowhere")

    def test_priority_out_of_range(self):
        with pytest.raises(InvalidTask, match="priority must be a whole number between -100"):
            t.add.using(priority=101)

    def test_function_not_at_module_level(self):
        def local(): ...

        with pytest.raises(InvalidTask, match="module level"):
            task(local)

    def test_naive_run_after(self):
        with pytest.raises(InvalidTask, match="aware"):
            t.add.using(run_after=timezone.now().replace(tzinfo=None) + timedelta(hours=1))

    def test_context_parameter_missing(self):
        with pytest.raises(InvalidTask, match="first argument of 'context'"):
            task(takes_context=True)(t.add.func)

    def test_queue_not_configured_in_redisq(self, r):
        tasks = {"default": {"BACKEND": BACKEND, "QUEUES": ["default", "ghost"]}}
        with override_settings(TASKS=tasks):
            ghost = t.add.using(queue_name="ghost")
            with pytest.raises(InvalidTask, match=r"'ghost' .* is not a django-redisq queue"):
                ghost.enqueue(1, 2)
            errors = task_backends["default"].check()
        assert [e.id for e in errors] == ["django_redisq.E020"]
        assert "'ghost'" in errors[0].msg
        assert r.dbsize() == 0

    def test_arguments_are_checked_in_the_caller(self, r):
        with pytest.raises(TypeError, match="JSON"):
            t.add.enqueue(1, object())
        with pytest.raises(TypeError, match=r"tests\.tasks_django\.add\(\).*missing"):
            t.add.enqueue(1)
        assert r.dbsize() == 0

    def test_bad_options(self):
        tasks = {"default": {"BACKEND": BACKEND, "OPTIONS": {"ENQUEUE_ON_COMIT": True}}}
        with override_settings(TASKS=tasks), pytest.raises(
                InvalidTaskBackend, match=r"ENQUEUE_ON_COMIT.*valid options: ENQUEUE_ON_COMMIT"):
            task_backends["default"]
        tasks = {"default": {"BACKEND": BACKEND, "OPTIONS": {"ENQUEUE_ON_COMMIT": "yes"}}}
        with override_settings(TASKS=tasks), pytest.raises(InvalidTaskBackend, match="True or"):
            task_backends["default"]

    def test_unknown_results(self, r):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result("no-such-id")
        # A plain @job is not a task result.
        from tests import jobs

        j = jobs.add.delay(1, 2)
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(j.id)

    def test_worker_runs_only_registered_tasks(self, r):
        queue = get_queue("default")
        j = queue.enqueue("task:os.getcwd")  # a payload naming a module path is not enough
        burst("default")
        assert j.record.status == "failed"
        assert "not registered" in j.record.error["message"]


DJANGO_61 = django.VERSION >= (6, 1)
needs_django_61 = pytest.mark.skipif(
    not DJANGO_61,
    reason=f"@task(**options) reaches task_class on Django 6.1+; this is {django.get_version()}")


@needs_django_6
class TestEngineOptions:
    """retry=, timeout= and job_id= map to the engine's retries, timeouts and unique jobs."""

    def test_using_sets_and_clears_engine_options(self):
        from django_redisq import Retry
        from django_redisq.tasks_backend import RedisQTask

        assert isinstance(t.add, RedisQTask) and t.add.timeout is None
        policy = Retry(max=1)
        changed = t.add.using(priority=5, timeout=7, retry=policy)
        assert (changed.priority, changed.timeout, changed.retry) == (5, 7, policy)
        assert changed.using(timeout=None).timeout is None
        assert changed.using(priority=1).retry is policy

    def test_bad_options_are_invalid_task(self):
        with pytest.raises(InvalidTask, match=r"retry must be a django_redisq\.Retry"):
            t.add.using(retry=3)
        with pytest.raises(InvalidTask, match="timeout must be a number of seconds > 0"):
            t.add.using(timeout=0)
        with pytest.raises(InvalidTask, match="job_id must be a non-empty string"):
            t.add.using(job_id="")

    def test_timeout_and_retry_set_with_using_run_on_the_worker(self, r):
        res = t.fail.using(retry=__import__("django_redisq").Retry(max=1, delay=0)).enqueue()
        record = get_queue("default").job(res.id).record
        assert record.retry is not None and record.retry["max"] == 1
        burst()
        res.refresh()
        assert res.status == TaskResultStatus.FAILED and res.attempts == 2
        assert len(res.errors) == 2


@needs_django_61
class TestEngineOptionsInDecorator:
    def test_retry_runs_until_success(self, r):
        res = t.flaky.enqueue("test:flaky")
        burst()
        res.refresh()
        assert res.status == TaskResultStatus.SUCCESSFUL, res.errors
        assert res.return_value == 3 and res.attempts == 3
        assert [e.exception_class_path for e in res.errors] == ["builtins.RuntimeError"] * 2

    def test_timeout_fails_the_task(self, r):
        res = t.too_slow.enqueue()
        burst("default")
        res.refresh()
        assert res.status == TaskResultStatus.FAILED
        assert res.errors[0].exception_class_path == "django_redisq.engine.errors.JobTimeout"
        assert "timeout of 0.3 s" in res.errors[0].traceback

    def test_job_id_function_makes_one_job_per_argument(self, r):
        first = t.sync_account.enqueue(7)
        again = t.sync_account.enqueue(7)
        other = t.sync_account.enqueue(8)
        assert first.id == again.id == "sync-account:7" and other.id == "sync-account:8"
        assert get_queue("default").counts()["queued"] == 2
        burst("default")
        assert sorted(r.lrange("test:task-record", 0, -1)) == [b"sync 7", b"sync 8"]
        assert default_task_backend.get_result("sync-account:7").return_value == 7
        # Once finished, the same id may run again.
        assert t.sync_account.enqueue(7).id == "sync-account:7"
        assert get_queue("default").counts()["queued"] == 1

    def test_fixed_job_id(self, r):
        assert t.nightly_report.enqueue().id == t.nightly_report.enqueue().id == "nightly-report"
        assert get_queue("default").counts()["queued"] == 1

    def test_bad_decorator_options(self):
        with pytest.raises(InvalidTask, match="timeout must be a number of seconds > 0"):
            task(timeout=-1)(t.add.func)
        with pytest.raises(TypeError, match="job_id function returned 42"):
            t.add.using(job_id=lambda a, b: 42).enqueue(1, 2)


@needs_django_6
class TestFinishedSignalMatchesTheOutcome:
    """task_finished: once per attempt that ends, with the status the stored result takes."""

    def test_async_timeout(self, r):
        res = t.sleepy.using(timeout=0.3).enqueue()
        with signals_seen() as seen:
            burst("default")
        res.refresh()
        assert res.status == TaskResultStatus.FAILED
        assert [e.exception_class_path for e in res.errors] == [TIMEOUT_PATH]
        assert seen == ["started sleepy RUNNING [] q=default p=0",
                        f"finished sleepy FAILED [{TIMEOUT_PATH}] q=default p=0"]

    def test_unencodable_return_value_fails_before_it_is_reported(self, r):
        res = t.returns_nan.enqueue()
        with signals_seen() as seen:
            burst("default")
        res.refresh()
        assert res.status == TaskResultStatus.FAILED
        assert [e.exception_class_path for e in res.errors] == ["builtins.TypeError"]
        assert "cannot be encoded with the json serializer" in res.errors[0].traceback
        assert seen == ["started returns_nan RUNNING [] q=default p=0",
                        "finished returns_nan FAILED [builtins.TypeError] q=default p=0"]

    def test_sync_timeout_is_reported_then_its_late_thread_sends_nothing(self, r, worker_proc):
        queue = get_queue("default")
        res = t.wait_release.using(timeout=0.3).enqueue("test:release")
        w = worker_proc("default", "--concurrency", "1", env=SIGNALS_ENV)
        failed = f"finished wait_release FAILED [{TIMEOUT_PATH}] q=default p=0"
        # Reported when the worker gives up on it, while its thread still runs.
        wait_for(lambda: failed in worker_signals(r, "wait_release"), timeout=20,
                 message=lambda: f"{r.lrange('test:task-signals', 0, -1)}\n{w.output()}")
        assert queue.fetch_record(res.id).status == "failed"
        r.rpush("test:release", "go")
        # One slot, which the timed-out thread holds until it returns: once the next job has
        # run, the late thread has returned (and sent anything it would).
        after = t.add.enqueue(1, 2)
        assert queue.wait(after.id, timeout=20).status == "finished", w.output()
        assert worker_signals(r, "wait_release") == [
            "started wait_release RUNNING [] q=default p=0", failed]
        res.refresh()
        assert res.status == TaskResultStatus.FAILED

    def test_cancel_while_running(self, r, worker_proc):
        queue = get_queue("default")
        w = worker_proc("default", env=SIGNALS_ENV)
        canceled = f"finished {{}} FAILED [{REDISQ_ERROR_PATH}] q=default p=0"
        for res, name, release in ((t.sleepy.enqueue(), "sleepy", None),
                                   (t.wait_release.enqueue("test:go"), "wait_release",
                                    "test:go")):
            wait_for(lambda n=name: worker_signals(r, n), timeout=20, message=w.output)
            assert queue.cancel(res.id) == "started"
            if release:  # a sync task cannot be stopped: it ends canceled when it returns
                r.rpush(release, "go")
            wait_for(lambda n=name: len(worker_signals(r, n)) == 2, timeout=20,
                     message=lambda n=name: f"{worker_signals(r, n)}\n{w.output()}")
            assert worker_signals(r, name) == [f"started {name} RUNNING [] q=default p=0",
                                               canceled.format(name)]
            record = wait_for(lambda i=res.id: (x := queue.fetch_record(i)).is_terminal and x,
                              timeout=20, message=w.output)
            assert record.status == "canceled"
            assert default_task_backend.get_result(res.id).status == TaskResultStatus.FAILED

    def test_each_failed_attempt_reports_failed(self, r):
        """Django has no retries: each attempt that ends reports its own outcome, so a retried
        task sends started and finished once per attempt."""
        res = t.fail.using(retry=Retry(max=1, delay=0)).enqueue()
        with signals_seen() as seen:
            burst("default")
        res.refresh()
        assert res.status == TaskResultStatus.FAILED and res.attempts == 2
        error = "builtins.ValueError"
        assert seen == ["started fail RUNNING [] q=default p=0",
                        f"finished fail FAILED [{error}] q=default p=0",
                        f"started fail RUNNING [{error}] q=default p=0",
                        f"finished fail FAILED [{error},{error}] q=default p=0"]


@needs_django_6
class TestEngineErrors:
    def test_worker_death_names_an_importable_class(self, r, worker_proc):
        from django_redisq.engine import errors

        res = t.exit_worker.enqueue()
        queue = get_queue("default")
        w = worker_proc("default", "--processes", "1", env=FAST_LEASE)
        wait_for(lambda: queue.fetch_record(res.id).status == "failed", timeout=40,
                 message=w.output)
        res.refresh()
        error = res.errors[-1]
        # The class is the engine's WorkerDied once django_redisq.engine.errors has one; until
        # then its base, RedisQError. Never builtins.WorkerDied, which does not import.
        name = "WorkerDied" if hasattr(errors, "WorkerDied") else "RedisQError"
        assert error.exception_class_path == f"django_redisq.engine.errors.{name}"
        assert issubclass(error.exception_class, errors.RedisQError)
        assert error.traceback.startswith("WorkerDied: the worker running this job died")

    def test_recorded_names_map_to_importable_paths(self):
        from django_redisq.engine import errors
        from django_redisq.engine.job import JobRecord
        from django_redisq.tasks_backend import to_result

        names = ["ValueError", "DependencyFailed", "JobTimeout", "tests.jobs.Nope", "Bogus"]
        rec = JobRecord(id="j", queue="default", func="task:tests.tasks_django.add",
                        status="failed", attempts=1,
                        errors=[{"type": n, "message": "m"} for n in names])
        paths = [e.exception_class_path for e in to_result(rec, t.add, "default").errors]
        dependency = "DependencyFailed" if hasattr(errors, "DependencyFailed") else "RedisQError"
        assert paths == ["builtins.ValueError", f"django_redisq.engine.errors.{dependency}",
                         TIMEOUT_PATH, "tests.jobs.Nope", REDISQ_ERROR_PATH]


@needs_django_6
class TestResultTaskIsTheJobs:
    """TaskResult.task has the job's own queue, priority and run_after, whichever variants
    of the task were built in the process that runs or reads it."""

    def test_in_the_worker_and_from_get_result(self, r):
        res = t.task_options.using(queue_name="high", priority=50).enqueue()
        past = timezone.now() - timedelta(seconds=1)
        due = t.task_options.using(run_after=past).enqueue()
        t.task_options.using(queue_name="low", priority=7)  # built later, in this process
        with signals_seen() as seen:
            burst("default", "high")
        got = default_task_backend.get_result(res.id)
        assert got.return_value == {"queue": "high", "priority": 50, "run_after": None}
        assert (got.task.queue_name, got.task.priority) == ("high", 50)
        assert sorted(seen) == sorted([
            "started task_options RUNNING [] q=high p=50",
            "finished task_options SUCCESSFUL [] q=high p=50",
            "started task_options RUNNING [] q=default p=0",
            "finished task_options SUCCESSFUL [] q=default p=0"])
        ran = default_task_backend.get_result(due.id).return_value
        assert abs(datetime.fromisoformat(ran["run_after"]) - past) < timedelta(
            milliseconds=1)

    def test_run_after_of_each_job(self, r):
        when = timezone.now() + timedelta(hours=1)
        later = t.add.using(run_after=when).enqueue(1, 1)
        plain = t.add.enqueue(1, 2)
        t.add.using(run_after=when + timedelta(hours=1))  # built later, never enqueued
        assert default_task_backend.get_result(plain.id).task.run_after is None
        got = default_task_backend.get_result(later.id).task.run_after
        assert abs(got - when) < timedelta(milliseconds=1)


@needs_django_6
class TestDuplicateJobId:
    def test_returns_the_stored_job_and_sends_nothing(self, r):
        unique = t.record.using(job_id="only-one")
        enqueued: list[str] = []

        def handler(sender, task_result, **kwargs):
            enqueued.append(task_result.id)

        task_enqueued.connect(handler)
        try:
            first = unique.enqueue("a")
            again = unique.enqueue("b")
            aagain = asyncio.run(unique.aenqueue("c"))
        finally:
            task_enqueued.disconnect(handler)
        assert enqueued == ["only-one"]
        assert first.id == again.id == aagain.id == "only-one"
        assert again.args == aagain.args == ["a"]
        stored = default_task_backend.get_result("only-one")
        assert again.enqueued_at == aagain.enqueued_at == stored.enqueued_at
        assert again.status == TaskResultStatus.READY
        assert get_queue("default").counts()["queued"] == 1
