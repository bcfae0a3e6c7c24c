"""Observability: Prometheus metrics, OpenTelemetry job spans, structured logs, progress."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from django_redisq import get_queue, metrics, stats
from django_redisq.checks import check_metrics
from django_redisq.engine.counters import BUCKETS, JobCounters, parse_stats
from django_redisq.engine.ops import one
from django_redisq.logging import JobContextFilter, JSONFormatter
from tests import jobs
from tests.conftest import _free_port, wait_for

TOKEN = "test-metrics-token"


def burst(*queues: str) -> None:
    """A burst worker in a thread: the test's database transaction stays its own."""
    from django_redisq.worker import run_worker

    t = threading.Thread(target=run_worker, args=(queues or ("default",),),
                         kwargs={"install_signals": False, "burst": True})
    t.start()
    t.join(30)
    assert not t.is_alive(), "the burst worker did not finish"


def now(func: Any, *args: Any) -> Any:
    """Enqueue at once (a test holding a transaction would otherwise wait for its commit)."""
    return func.using(on_commit=False).delay(*args)


def scrape(client: Client, **headers: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The metrics view's samples: sample name -> sorted labels -> value."""
    resp = client.get("/metrics/", headers=headers)
    assert resp.status_code == 200, resp.content
    assert resp["Content-Type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(resp.content.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def sample(samples: dict[str, Any], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]  # type: ignore[no-any-return]


# -- metrics -------------------------------------------------------------------------------------
def test_metrics_view_counts_finished_failed_retried_and_timed_out_jobs(admin_client, r):
    for i in range(4):
        now(jobs.add, i, 1)
    for _ in range(2):
        now(jobs.fail, "no")
    now(jobs.flaky_with_retry, "obs:flaky", 1)  # fails once, retried, then finishes
    now(jobs.sleep_async_short_timeout, 5)      # timeout 0.3 s
    get_queue("low").enqueue("tests.jobs.add", [1, 1])  # stays queued: no worker on "low"
    burst("default")

    s = scrape(admin_client)
    q = "default"
    assert sample(s, "redisq_jobs_total", queue=q, function="tests.jobs.add",
                  outcome="finished") == 4
    assert sample(s, "redisq_jobs_total", queue=q, function="tests.jobs.fail",
                  outcome="failed") == 2
    assert sample(s, "redisq_jobs_total", queue=q, function="tests.jobs.flaky_retry",
                  outcome="retried") == 1
    assert sample(s, "redisq_jobs_total", queue=q, function="tests.jobs.flaky_retry",
                  outcome="finished") == 1
    assert sample(s, "redisq_jobs_total", queue=q,
                  function="tests.jobs.sleep_async_short_timeout", outcome="timed_out") == 1
    # histograms: one observation per attempt, cumulative buckets ending at +Inf
    for hist in ("redisq_job_run_seconds", "redisq_job_wait_seconds"):
        assert sample(s, f"{hist}_count", queue=q, function="tests.jobs.add") == 4
        assert sample(s, f"{hist}_bucket", queue=q, function="tests.jobs.add", le="+Inf") == 4
        assert sample(s, f"{hist}_count", queue=q, function="tests.jobs.flaky_retry") == 2
        assert sample(s, f"{hist}_count", queue=q, function="tests.jobs.fail") == 2
    assert sample(s, "redisq_job_run_seconds_sum", queue=q,
                  function="tests.jobs.sleep_async_short_timeout") >= 0.3
    assert sample(s, "redisq_job_run_seconds_bucket", queue=q,
                  function="tests.jobs.sleep_async_short_timeout", le="0.1") == 0
    # gauges
    assert sample(s, "redisq_queue_jobs", queue="low", state="queued") == 1
    assert sample(s, "redisq_queue_jobs", queue=q, state="finished") == 5
    assert sample(s, "redisq_queue_jobs", queue=q, state="failed") == 3
    assert sample(s, "redisq_workers") == 0  # the burst worker deregistered
    assert sample(s, "redisq_workers_suspended") == 0
    # no label carries a job id or an argument
    assert all(set(dict(labels)) <= {"queue", "function", "outcome", "state", "le"}
               for series in s.values() for labels in series)


def test_metrics_view_refuses_non_staff_and_wrong_tokens_and_accepts_the_token(
        django_user_model, r):
    assert Client().get("/metrics/").status_code == 403
    user = django_user_model.objects.create_user("plain", password="pw")
    c = Client()
    c.force_login(user)
    assert c.get("/metrics/").status_code == 403
    assert Client().get("/metrics/", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert Client().get("/metrics/", headers={"Authorization": f"Bearer {TOKEN}"}
                        ).status_code == 200
    assert Client().post("/metrics/", headers={"Authorization": f"Bearer {TOKEN}"}
                         ).status_code == 405


def test_live_workers_gauge_counts_a_running_worker(admin_client, r, worker_proc):
    w = worker_proc("default", "low")
    wait_for(lambda: sample(scrape(admin_client), "redisq_workers") == 1, timeout=20,
             message=lambda: f"the worker never appeared:\n{w.output()}")
    s = scrape(admin_client)
    assert sample(s, "redisq_queue_workers", queue="low") == 1
    assert sample(s, "redisq_queue_workers", queue="high") == 0


def test_dead_workers_jobs_are_counted_as_recovered(r):
    q = get_queue("default")
    j = q.enqueue("tests.jobs.add", [1, 2])
    assert q.run(one(q.claim_call("ghost", 1, 1)))[1]  # lease of 1 ms: "ghost" dies at once
    wait_for(lambda: q.run(one(q.maintain_call(max_deaths=3)))[0] == 1, timeout=5)
    assert j.status == "queued"
    stats = parse_stats(r.hgetall(q.keys.stats))
    assert stats["tests.jobs.add"].outcomes == {"recovered": 1}


def test_counters_bucket_times_like_prometheus():
    c = JobCounters()
    c.record("q", "f", "finished", 0.005, 0.0051)  # on a bound: in that bucket (le is <=)
    c.record("q", "f", "finished", 7200.0, None)
    flat = c.take("q")
    assert flat is not None and c.take("q") is None
    fs = parse_stats(dict(zip(flat[::2], flat[1::2])))["f"]
    assert fs.outcomes == {"finished": 2}
    assert fs.wait.cumulative()[0] == ("0.005", 1)
    assert fs.wait.cumulative()[-1] == ("+Inf", 2)
    assert fs.wait.cumulative()[-2] == (f"{BUCKETS[-1]:g}", 1)
    assert fs.run.count == 1 and fs.run.cumulative()[1] == ("0.01", 1)
    assert fs.wait.sum == pytest.approx(7200.005)


def _metrics_text(port: int, *needles: str) -> str | None:
    """The metrics served on ``port`` if they contain every needle, else None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as f:
            text: str = f.read().decode()
    except OSError:
        return None
    return text if all(n in text for n in needles) else None


@pytest.mark.parametrize("processes", [None, 2])
def test_rqworker_serves_metrics_on_its_port(r, worker_proc, processes):
    """Single process, and --processes (the supervisor serves them). Budget: under 20 s."""
    port = _free_port()
    get_queue("default").enqueue("tests.jobs.add", [1, 2])
    extra = ("--processes", str(processes)) if processes else ()
    w = worker_proc("default", "--metrics-port", str(port), *extra)
    # A scrape is not one atomic read (depth and counters come in two round trips, and the
    # worker writes the outcome and its count in one pipeline, not one transaction): wait for
    # a scrape that shows both.
    wait_for(lambda: _metrics_text(
        port, 'redisq_queue_jobs{queue="default",state="finished"} 1.0',
        'redisq_jobs_total{function="tests.jobs.add",outcome="finished",queue="default"} 1.0'),
        timeout=20, message=lambda: f"no metrics served:\n{w.output()}")
    if processes:
        wait_for(lambda: _metrics_text(port, "redisq_workers 2.0"), timeout=20,
                 message=lambda: f"the children never showed as live workers:\n{w.output()}")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...); None when
    the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat(int(entry))
        if fields is not None and fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(entry))
    return found


def test_supervisor_serves_metrics_from_a_process_of_its_own(r, worker_proc):
    """A metrics thread in the supervisor made every fork of a worker a fork of a
    multi-threaded process, and a worker forked mid-scrape hung on an import lock. The server is
    a supervised process instead: the supervisor keeps one thread, a killed server is replaced on
    the same port, and a supervisor killed outright takes its server with it."""
    port = _free_port()
    w = worker_proc("default", "--metrics-port", str(port), "--processes", "2")
    wait_for(lambda: _metrics_text(port, "redisq_workers 2.0"), timeout=20,
             message=lambda: f"no metrics served:\n{w.output()}")
    assert "\nThreads:\t1\n" in Path(f"/proc/{w.pid}/status").read_text()
    workers = {s.pid for s in stats.snapshot(["default"]).workers if s.alive}
    (server,) = _children(w.pid) - workers
    os.kill(server, signal.SIGKILL)
    wait_for(lambda: len(_children(w.pid) - workers - {server}) == 1
             and _metrics_text(port, "redisq_workers 2.0"), timeout=20,
             message=lambda: f"the metrics server was not replaced:\n{w.output()}")
    (server,) = _children(w.pid) - workers
    w.kill()  # SIGKILL: no chance to end its children
    wait_for(lambda: not _alive(server), timeout=10,
             message="the metrics server outlived its supervisor")
    assert _metrics_text(port) is None


def test_burst_supervisor_with_metrics_exits_when_its_workers_do(r, worker_proc):
    port = _free_port()
    get_queue("default").enqueue("tests.jobs.add", [1, 2])
    w = worker_proc("default", "--burst", "--metrics-port", str(port), "--processes", "2")
    assert w.wait(30) == 0, w.output()
    assert _metrics_text(port) is None
    assert get_queue("default").counts()["finished"] == 1


def test_metrics_without_prometheus_client_fail_early_naming_the_extra(monkeypatch, settings):
    monkeypatch.setattr(metrics, "prometheus_client", None)
    with pytest.raises(CommandError, match=r'pip install "django-redisq\[prometheus\]"'):
        call_command("rqworker", "--metrics-port", "9999", "--burst")
    errors = check_metrics()  # the test URLconf mounts metrics_view
    assert [e.id for e in errors] == ["django_redisq.E013"]
    assert "django-redisq[prometheus]" in (errors[0].hint or "")


def test_metrics_token_must_be_a_string(settings):
    from django_redisq.conf import clear_cache, validate

    settings.REDISQ = {**settings.REDISQ, "METRICS_TOKEN": 123}
    clear_cache()
    _, problems = validate()
    assert any('REDISQ["METRICS_TOKEN"] must be a non-empty string' in p.msg for p in problems)
    assert all("123" not in p.msg for p in problems)  # a secret is never echoed


# -- tracing -----------------------------------------------------------------------------------
@pytest.fixture
def spans_file(tmp_path: Any) -> Iterator[str]:
    yield str(tmp_path / "spans.jsonl")


def test_job_span_in_the_worker_is_a_child_of_the_enqueuing_span(r, worker_proc, spans_file):
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("request") as parent:
        j = jobs.add.delay(2, 3)
        bad = jobs.fail.delay("traced")
        inner = jobs.traced_inner.delay()
    outside = jobs.add.delay(1, 1)
    assert r.hexists(get_queue().keys.job(j.id), "trace")
    assert not r.hexists(get_queue().keys.job(outside.id), "trace")

    w = worker_proc("default", "--burst", env={"REDISQ_TEST_OTEL_FILE": spans_file})
    assert w.wait(30) == 0, w.output()
    with open(spans_file) as f:
        spans = [json.loads(line) for line in f]
    by_job = {s["attributes"]["redisq.job.id"]: s for s in spans
              if s["name"].startswith("redisq.job ")}
    ctx = parent.get_span_context()
    span = by_job[j.id]
    assert span["name"] == "redisq.job tests.jobs.add"
    assert span["parent_span_id"] == ctx.span_id
    assert span["trace_id"] == ctx.trace_id
    assert span["pid"] == w.pid != os.getpid()
    assert span["attributes"] == {
        "messaging.system": "redisq", "redisq.job.id": j.id, "redisq.queue": "default",
        "redisq.function": "tests.jobs.add", "redisq.attempt": 1, "redisq.outcome": "finished"}
    assert by_job[bad.id]["parent_span_id"] == ctx.span_id
    assert by_job[bad.id]["status"] == "ERROR"
    inner_span = next(s for s in spans if s["name"] == "inner work")
    assert inner_span["parent_span_id"] == by_job[inner.id]["span_id"]  # job code's own spans
    assert by_job[outside.id]["parent_span_id"] is None  # a root span of its own
    assert by_job[outside.id]["trace_id"] != ctx.trace_id


# -- structured logs ---------------------------------------------------------------------------
def test_every_log_record_about_a_job_carries_its_fields(r, caplog):
    ok = jobs.add.delay(1, 2)
    bad = jobs.fail.delay("logged")
    inside = jobs.log_inside.delay("hi")
    caplog.set_level(logging.INFO)
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JSONFormatter())
    logging.getLogger().addHandler(handler)
    try:
        call_command("rqworker", "default", "--burst", verbosity=1)
    finally:
        logging.getLogger().removeHandler(handler)
    about = {}
    for rec in caplog.records:
        if hasattr(rec, "job_id"):
            about.setdefault(rec.job_id, []).append(rec)
    for j, func in ((ok, "tests.jobs.add"), (bad, "tests.jobs.fail")):
        assert about[j.id], f"no log record about {j.id}"
        for rec in about[j.id]:
            assert (rec.job_id, rec.queue, rec.function, rec.attempt) == (
                j.id, "default", func, 1)
    assert len(about[bad.id]) == 2  # the warning and the outcome line
    stream = handler.stream
    assert isinstance(stream, io.StringIO)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    inner = [d for d in lines if d["message"] == "inside the job: hi"]
    assert len(inner) == 1  # a record logged by the job body gets the fields from the filter
    assert {k: inner[0][k] for k in ("job_id", "queue", "function", "attempt", "level")} == {
        "job_id": inside.id, "queue": "default", "function": "tests.jobs.log_inside",
        "attempt": 1, "level": "WARNING"}
    done = [d for d in lines if d.get("job_id") == ok.id and d.get("outcome") == "finished"]
    assert len(done) == 1 and done[0]["logger"] == "django_redisq.worker"


# -- progress and meta -------------------------------------------------------------------------
@pytest.mark.parametrize("func", [jobs.half_done, jobs.async_half_done])
def test_running_job_progress_is_seen_by_the_handle_and_the_admin_page(
        func, worker_thread, admin_client, r):
    j = now(func, "half <way>")
    assert jobs.PROGRESS_REPORTED.wait(20), "the job did not report progress"
    wait_for(lambda: j.progress == 0.5, timeout=5, message="progress 0.5 never reached Redis")
    assert j.status == "started"
    assert j.progress_message == "half <way>"
    if func is jobs.half_done:  # a second change within 0.5 s: written at the end of the
        # throttle interval, without another call from the job
        wait_for(lambda: j.meta == {"step": "middle"}, timeout=5)
    url = reverse("admin:django_redisq_job_change", args=[j.queue.name, j.id])
    page = admin_client.get(url).content.decode()
    assert '<progress max="100" value="50.0">' in page
    assert "half &lt;way&gt;" in page
    assert '<meta http-equiv="refresh" content="2">' in page  # refreshes while it runs
    jobs.PROGRESS_GO.set()
    assert j.get(timeout=20) == "done"
    assert j.progress == 0.5
    page = admin_client.get(url).content.decode()
    assert 'http-equiv="refresh"' not in page
    assert '<progress max="100" value="50.0">' in page


def test_progress_in_a_tight_loop_is_throttled_and_the_last_value_is_kept(r):
    j = jobs.busy_progress.delay(5000)
    before = int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    burst("default")
    assert j.result == 5000
    assert (j.progress, j.progress_message) == (1.0, "step 5000")
    calls = int(r.info("commandstats")["cmdstat_evalsha"]["calls"]) - before
    # claim, progress (first, then at most one per 0.5 s: the loop takes well under 2 s here),
    # the last progress, finish, stats: not 5000 writes
    assert calls <= 10, calls


def test_progress_outside_a_job_and_bad_values_are_refused(r):
    from django_redisq.engine.context import JobContext

    q = get_queue()
    rec = q.enqueue("tests.jobs.add", [1, 2]).record
    ctx = JobContext(rec, q, "w")
    for bad in (1.5, -0.1, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="progress must be a number from 0 to 1"):
            ctx.set_progress(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JSON-serialisable"):
        ctx.update_meta(obj=object())


def test_eager_jobs_report_progress_and_meta_on_their_handle(settings):
    """Eager mode (tests): no worker and no Redis, the handle still shows them."""
    settings.REDISQ = {**settings.REDISQ, "MODE": "eager"}
    h = jobs.busy_progress.delay(10)
    assert (h.result, h.progress, h.progress_message) == (10, 1.0, "step 10")
    h = jobs.log_inside.delay("x")
    assert h.progress is None


def test_a_job_enqueued_without_a_span_is_a_root_span_after_other_jobs(r, worker_proc,
                                                                       spans_file):
    # A job started as the one before it ends (its slot freed) must not inherit that job's
    # context, where the previous job's span is current: it would become its child.
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("request"):
        first = jobs.async_add.delay(0, 0)
    rest = [jobs.async_add.delay(i, i) for i in range(6)]
    w = worker_proc("high", "--burst", "--concurrency", "1",
                    env={"REDISQ_TEST_OTEL_FILE": spans_file})
    assert w.wait(30) == 0, w.output()
    with open(spans_file) as f:
        spans = [json.loads(line) for line in f]
    by_job = {s["attributes"]["redisq.job.id"]: s for s in spans
              if s["name"].startswith("redisq.job ")}
    assert by_job[first.id]["parent_span_id"] is not None
    assert [by_job[j.id]["parent_span_id"] for j in rest] == [None] * 6
    assert len({by_job[j.id]["trace_id"] for j in rest}) == 6


def test_a_scrape_while_redis_is_down_is_a_503_with_one_line_not_a_traceback(
        admin_client, settings, caplog):
    url = f"redis://:s3cret@127.0.0.1:{_free_port()}/0"  # nothing listens there
    settings.REDISQ = {**settings.REDISQ,
                       "QUEUES": {n: {"URL": url} for n in settings.REDISQ["QUEUES"]}}
    page = admin_client.get("/metrics/")
    assert page.status_code == 503 and b"cannot read the queues" in page.content
    assert b"s3cret" not in page.content
    server = metrics.bind_metrics_server(_free_port(), "127.0.0.1", ["default"])
    one = threading.Thread(target=server._server().handle_request)  # serve one scrape
    one.start()
    try:
        port = server.socket.getsockname()[1]
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert exc.value.code == 503
        assert b"cannot read the queues" in exc.value.read()
    finally:
        one.join(10)
        server.close()
    warnings = [r for r in caplog.records if r.name == "django_redisq.metrics"]
    assert len(warnings) == 2 and all(r.exc_info is None for r in warnings)
    assert all("s3cret" not in r.getMessage() for r in warnings)
