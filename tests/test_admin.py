"""The admin's Queues section: pages, actions, permissions and escaping, against a real Redis."""

from __future__ import annotations

import gc
import json
import threading
import time
from urllib.parse import urlencode

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.test import Client, override_settings
from django.urls import reverse

from django_redisq import conf, get_queue
from django_redisq.admin_views import PER_PAGE, plain
from django_redisq.engine.keys import STATES, worker_key, workers_key
from django_redisq.engine.ops import one
from tests import jobs

pytestmark = pytest.mark.django_db

QUEUES_URL = reverse("admin:django_redisq_queue_changelist")
JOBS_URL = reverse("admin:django_redisq_job_changelist")
WORKERS_URL = reverse("admin:django_redisq_worker_changelist")
SCHEDULES_URL = reverse("admin:django_redisq_schedule_changelist")
XSS = "<script>alert(1)</script>"


def job_url(job_id: str, queue: str = "default", action: str = "change") -> str:
    return reverse(f"admin:django_redisq_job_{action}", args=[quote(queue), quote(job_id)])


def jobs_url(**params: str) -> str:
    return f"{JOBS_URL}?{urlencode(params)}"


def burst(*queues: str) -> None:
    """Run a burst worker in a thread: it closes its own thread's database connections, not
    this test's (which holds the test transaction)."""
    from django_redisq.worker import run_worker

    t = threading.Thread(target=run_worker, args=(queues or ("default",),),
                         kwargs={"install_signals": False, "burst": True})
    t.start()
    t.join(30)
    assert not t.is_alive(), "the burst worker did not finish"


def now_job(func, *args):  # type: ignore[no-untyped-def]
    """Enqueue at once (the test runs inside a transaction that never commits)."""
    return func.using(on_commit=False).delay(*args)


def failed_job(message: str = "it broke"):  # type: ignore[no-untyped-def]
    j = now_job(jobs.fail, message)
    burst()
    assert j.status == "failed"
    return j


@pytest.fixture
def make_user(django_user_model):  # type: ignore[no-untyped-def]
    def make(name: str, *codenames: str, staff: bool = True):  # type: ignore[no-untyped-def]
        user = django_user_model.objects.create_user(name, password="pw", is_staff=staff)
        for codename in codenames:
            user.user_permissions.add(Permission.objects.get(
                content_type__app_label="django_redisq", codename=codename))
        return user

    return make


def client_for(user, **kwargs) -> Client:  # type: ignore[no-untyped-def]
    c = Client(**kwargs)
    c.force_login(user)
    return c


def total_calls(r) -> int:  # type: ignore[no-untyped-def]
    return sum(int(v["calls"]) for v in r.info("commandstats").values())


# -- index and permissions -------------------------------------------------------------------
def test_permissions_exist_for_the_unmanaged_models():
    codenames = set(Permission.objects.filter(content_type__app_label="django_redisq")
                    .values_list("codename", flat=True))
    assert codenames == {"view_queue", "view_job", "change_job", "delete_job", "view_worker",
                         "view_schedule"}


def test_admin_index_lists_the_queues_section(admin_client):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert "Queues" in page
    for url in (QUEUES_URL, JOBS_URL, WORKERS_URL, SCHEDULES_URL):
        assert f'href="{url}"' in page


# -- queues page -------------------------------------------------------------------------------
def test_queues_page_shows_counts_per_state_and_the_masked_url(admin_client, r):
    for i in range(3):
        now_job(jobs.add, i, i)
    now_job(jobs.add.using(delay=60), 1, 2)
    now_job(jobs.async_add, 1, 1)  # queue "high"
    page = admin_client.get(QUEUES_URL)
    assert page.status_code == 200
    html = page.content.decode()
    for state in STATES:
        assert f">{state.capitalize()}</th>" in html
    default = html.split('data-queue="default"')[1].split("</tr>")[0]
    queued_link = f'href="{JOBS_URL}?queue=default&amp;state=queued">3</a>'
    assert f'<td class="redisq-num" data-state="queued"><a {queued_link}' in default
    assert 'state=scheduled">1</a>' in default
    high = html.split('data-queue="high"')[1].split("</tr>")[0]
    assert 'state=queued">1</a>' in high
    assert "redis://127.0.0.1:" in html
    assert "Failed jobs" in html


@override_settings(REDISQ={"QUEUES": {"default": {"URL": "redis://user:s3cret@127.0.0.1:1/0"}}})
def test_password_is_masked_and_unreachable_redis_is_a_503(admin_client):
    conf.clear_cache()
    try:
        for url in (QUEUES_URL, JOBS_URL, WORKERS_URL, SCHEDULES_URL,
                    job_url("abc"), reverse("admin:django_redisq_queue_empty", args=["default"])):
            page = admin_client.get(url)
            assert page.status_code == 503, url
            html = page.content.decode()
            assert "Redis is unreachable" in html
            assert "redis://user:***@127.0.0.1:1/0" in html
            assert "s3cret" not in html
        page = admin_client.post(job_url("abc", action="requeue"))
        assert page.status_code == 503
    finally:
        conf.clear_cache()


def test_queue_counts_are_one_round_trip_per_redis(admin_client, r):
    admin_client.get(QUEUES_URL)  # warm up: connections, scripts
    # Clients of settings that earlier tests dropped close their connections when collected,
    # and the server counts each close as a read: collect them before counting.
    gc.collect()
    before = int(r.info("stats")["total_reads_processed"])
    admin_client.get(QUEUES_URL)
    # three queues on one Redis: one pipeline of counts + worker registry, one more for the
    # workers' hashes when any worker is registered, plus this test's INFO.
    assert int(r.info("stats")["total_reads_processed"]) - before <= 3


# -- jobs list ---------------------------------------------------------------------------------
def test_jobs_list_filters_by_queue_and_state_and_links_to_details(admin_client, r):
    a = now_job(jobs.add, 1, 2)
    s = now_job(jobs.add.using(delay=60), 3, 4)
    html = admin_client.get(jobs_url(queue="default", state="queued")).content.decode()
    assert job_url(a.id) in html and job_url(s.id) not in html
    assert "tests.jobs.add" in html
    html = admin_client.get(jobs_url(queue="default", state="scheduled")).content.decode()
    assert job_url(s.id) in html and job_url(a.id) not in html
    html = admin_client.get(jobs_url(queue="high", state="queued")).content.decode()
    assert job_url(a.id) not in html


def test_search_by_exact_id_and_by_function_name(admin_client, r):
    a = now_job(jobs.add, 1, 2)
    e = now_job(jobs.echo, "x")
    high = now_job(jobs.async_add, 1, 1)
    html = admin_client.get(jobs_url(queue="default", q=a.id)).content.decode()
    assert job_url(a.id) in html and job_url(e.id) not in html
    # an id is found whichever queue is selected
    html = admin_client.get(jobs_url(queue="default", q=high.id)).content.decode()
    assert job_url(high.id, "high") in html
    html = admin_client.get(jobs_url(queue="default", q="echo")).content.decode()
    assert job_url(e.id) in html and job_url(a.id) not in html
    assert "on the current page only" in html


def test_jobs_list_is_paginated(admin_client, r):
    q = get_queue("default")
    q.enqueue_many([("tests.jobs.add", [i, i], {}) for i in range(PER_PAGE + 5)])
    first = admin_client.get(jobs_url(queue="default", state="queued")).content.decode()
    second = admin_client.get(jobs_url(queue="default", state="queued", page="2")).content.decode()
    assert first.count('name="_selected_action"') == PER_PAGE
    assert second.count('name="_selected_action"') == 5
    assert f"{PER_PAGE + 5} queued jobs" in first
    # past the end: the last page, not an error
    past = admin_client.get(jobs_url(queue="default", state="queued", page="99"))
    assert past.status_code == 200 and past.content.decode().count('name="_selected_action"') == 5


@pytest.mark.parametrize("params", [
    {"page": "abc"}, {"page": "-1"}, {"page": "0"}, {"page": "1e3"}, {"page": "²"},
    {"state": "nope"}, {"queue": "nope"}, {"queue": "x" * 5000},
])
def test_bad_query_parameters_are_a_400_page(admin_client, params):
    page = admin_client.get(jobs_url(**params))
    assert page.status_code == 400
    assert "Bad request" in page.content.decode()
    assert "x" * 100 not in page.content.decode()  # long values are not echoed whole


def test_bad_parameters_elsewhere(admin_client, r):
    assert admin_client.get(f"{SCHEDULES_URL}?page=abc").status_code == 400
    assert admin_client.get(f"{SCHEDULES_URL}?queue=nope").status_code == 400
    assert admin_client.get(job_url("x" * 300)).status_code == 400
    # ids with control characters (enqueue once accepted them) are ids: not found, not refused
    assert admin_client.get(job_url("a\nb")).status_code == 404
    assert admin_client.get(job_url("missing")).status_code == 404
    assert admin_client.get(job_url("missing", queue="nope")).status_code == 404
    assert admin_client.post(job_url("missing", action="requeue")).status_code == 302
    # a search for something that cannot be an id is a function-name search, not an error
    assert admin_client.get(jobs_url(q="x" * 500)).status_code == 200


def test_failed_list_redis_commands_are_constant(admin_client, r):
    """First and last page of 20,000 failed jobs cost the same Redis commands, independent of
    the number of jobs."""
    q = get_queue("default")

    def fill(n: int) -> None:
        now = int(time.time() * 1000)
        err = json.dumps({"type": "ValueError", "message": "boom", "traceback": "Traceback"})
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            jid = f"f{i:06d}"
            pipe.hset(q.keys.job(jid), mapping={
                "v": 1, "id": jid, "queue": "default", "func": "tests.jobs.fail",
                "status": "failed", "ser": "json", "payload": "[[],{}]", "attempts": 1,
                "enqueued_at": now, "started_at": now, "ended_at": now + 5, "error": err,
                "errors": f"[{err}]"})
            pipe.zadd(q.keys.state("failed"), {jid: now + 7 * 86400 * 1000 + i})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()

    def cost(page: int) -> int:
        url = jobs_url(queue="default", state="failed", page=str(page))
        admin_client.get(url)  # warm (connection, session)
        before = total_calls(r)
        response = admin_client.get(url)
        assert response.status_code == 200
        assert response.content.decode().count('name="_selected_action"') == PER_PAGE
        return total_calls(r) - before

    fill(PER_PAGE * 2)
    small = (cost(1), cost(2))
    r.flushdb()
    fill(20_000)
    last = -(-20_000 // PER_PAGE)
    big = (cost(1), cost(last))
    assert small[0] == small[1] == big[0] == big[1]
    # 7 ZCARD (state counts), one ZREVRANGE window, one HGETALL per row, and our INFO
    assert big[0] == 7 + 1 + PER_PAGE + 1


# -- job detail --------------------------------------------------------------------------------
def test_failed_job_detail_shows_its_traceback(admin_client, r):
    j = failed_job("it broke <b>")
    page = admin_client.get(job_url(j.id))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Traceback (most recent call last)" in html
    assert "raise ValueError(message)" in html
    assert "ValueError: it broke &lt;b&gt;" in html
    assert "tests.jobs.fail" in html
    assert "&quot;it broke &lt;b&gt;&quot;" in html  # the args, as JSON
    assert 'id="job-status">failed' in html


def test_finished_job_detail_shows_args_result_and_meta(admin_client, r):
    j = now_job(jobs.add.using(meta={"who": "me"}), 2, 3)
    burst()
    html = admin_client.get(job_url(j.id)).content.decode()
    assert '<pre class="redisq-pre" id="job-args">[\n  2,\n  3\n]</pre>' in html
    assert 'id="job-result"' in html and ">5</pre>" in html
    assert "&quot;who&quot;: &quot;me&quot;" in html


def test_job_detail_shows_limits_and_a_wait_for_a_slot(admin_client, r):
    running, waiting = now_job(jobs.exclusive, "a"), now_job(jobs.exclusive, "b")
    q = get_queue("default")
    q.run(one(q.claim_call("w", 10, 30_000)))
    html = admin_client.get(job_url(waiting.id)).content.decode()
    assert ('id="job-limits">key &#x27;one-at-a-time&#x27;: at most 1 at once; waiting for a '
            'slot</td>') in html
    html = admin_client.get(job_url(running.id)).content.decode()
    assert "at most 1 at once</td>" in html
    rated = now_job(jobs.rated, "x")
    html = admin_client.get(job_url(rated.id)).content.decode()
    assert "key &#x27;tests.jobs.rated&#x27;: 10/s (bursts of 10)</td>" in html


def test_undecodable_arguments_give_a_clear_message(admin_client, r):
    j = now_job(jobs.add, 1, 2)
    r.hset(get_queue().keys.job(j.id), "payload", b"\xff not json")
    html = admin_client.get(job_url(j.id)).content.decode()
    assert "The arguments cannot be decoded" in html


def test_pickled_data_is_not_unpickled_on_a_json_site(admin_client, r):
    j = now_job(jobs.add, 1, 2)
    r.hset(get_queue().keys.job(j.id), mapping={"ser": "pickle", "payload": b"cos\nsystem\n."})
    page = admin_client.get(job_url(j.id))
    assert page.status_code == 200
    assert "it is not decoded here" in page.content.decode()


def test_job_data_is_escaped(admin_client, r):
    j = now_job(jobs.echo, XSS)
    burst()
    assert j.status == "finished" and j.result == XSS
    f = now_job(jobs.fail, XSS)
    burst()
    for url in (job_url(j.id), job_url(f.id), jobs_url(queue="default", state="failed"),
                jobs_url(queue="default", q=XSS)):
        html = admin_client.get(url).content.decode()
        assert "&lt;script&gt;" in html, url
        assert "<script>alert(1)" not in html, url
    html = admin_client.get(job_url(j.id)).content.decode()
    result = html.split('id="job-result"')[1]
    assert "&quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;</pre>" in result


def test_worker_and_meta_strings_are_escaped(admin_client, r):
    prefix = conf.redisq_settings().key_prefix
    now = int(time.time() * 1000)
    r.zadd(workers_key(prefix), {XSS: now})
    r.hset(worker_key(prefix, XSS), mapping={
        "name": XSS, "host": XSS, "pid": 1, "queues": f"default,{XSS}", "jobs": f"default/{XSS}",
        "started": now, "last_beat": now, "state": XSS})
    for url in (WORKERS_URL, QUEUES_URL):
        html = admin_client.get(url).content.decode()
        assert "&lt;script&gt;" in html
        assert "<script>alert(1)" not in html


def test_safe_strings_are_made_plain():
    from django.utils.safestring import SafeString, mark_safe

    value = mark_safe(XSS)
    assert isinstance(value, SafeString)
    assert type(plain(value)) is str and plain(value) == XSS


# -- workers and schedules -----------------------------------------------------------------------
def test_workers_page_marks_stale_workers_dead(admin_client, r):
    prefix = conf.redisq_settings().key_prefix
    now = int(r.time()[0]) * 1000
    stale = now - int(conf.redisq_settings().heartbeat * 4 * 1000) - 1000
    for name, beat in (("alive-1", now), ("stale-1", stale)):
        r.zadd(workers_key(prefix), {name: beat})
        r.hset(worker_key(prefix, name), mapping={
            "name": name, "host": "box", "pid": 42, "queues": "default,high", "concurrency": 10,
            "started": now - 60000, "jobs": "default/j1", "processed": 7, "failed": 1,
            "state": "busy", "last_beat": beat})
    r.zadd(workers_key(prefix), {"gone-1": stale})  # its hash expired
    html = admin_client.get(WORKERS_URL).content.decode()
    rows = {name: html.split(f">{name}</th>")[1].split("</tr>")[0]
            for name in ("alive-1", "stale-1", "gone-1")}
    assert "busy" in rows["alive-1"] and "dead" not in rows["alive-1"]
    assert "dead" in rows["stale-1"] and "dead" in rows["gone-1"]
    assert job_url("j1") in rows["alive-1"]
    assert "box" in rows["alive-1"] and "default, high" in rows["alive-1"]
    queues = admin_client.get(QUEUES_URL).content.decode()
    default = queues.split('data-queue="default"')[1].split("</tr>")[0]
    assert "alive-1" in default and "stale-1" not in default


def test_workers_page_shows_a_real_worker(admin_client, r):
    burst()  # a burst worker beats once and unregisters when it stops
    assert admin_client.get(WORKERS_URL).status_code == 200


def test_schedules_page_lists_delayed_jobs_with_their_due_time(admin_client, r):
    j = now_job(jobs.add.using(delay=3600), 1, 2)
    html = admin_client.get(SCHEDULES_URL).content.decode()
    assert job_url(j.id) in html
    assert "No cron schedules configured" in html
    due = get_queue().fetch_record(j.id).scheduled_for  # type: ignore[union-attr]
    assert time.strftime("%Y-%m-%d %H:%M", time.gmtime(due / 1000)) in html


def test_schedules_page_lists_cron_schedules_with_last_and_next_tick(admin_client, r):
    from django.conf import settings

    cron = [{"cron": "*/5 * * * *", "func": "tests.jobs.add", "args": [1, 2],
             "name": "<b>five</b>"},
            {"every": 30, "func": "tests.jobs.echo", "queue": "high", "name": "half"}]
    with override_settings(REDISQ={**settings.REDISQ, "CRON": cron}):
        q = get_queue("default")
        r.set(q.keys.cron_last("<b>five</b>"), 1_700_000_000_000)
        page = admin_client.get(SCHEDULES_URL)
        html = page.content.decode()
    assert page.status_code == 200
    table = html.split('id="cron-list"')[1].split("</table>")[0]
    assert "&lt;b&gt;five&lt;/b&gt;" in table and "<b>five" not in table
    assert "*/5 * * * *" in table and "every 30.00 s" in table
    assert time.strftime("%Y-%m-%d %H:%M", time.gmtime(1_700_000_000)) in table
    assert "never" in table  # "half" has not run
    assert "No worker leads the scheduler" in html


# -- actions -------------------------------------------------------------------------------------
def test_requeue_a_failed_job(admin_client, r):
    j = failed_job()
    page = admin_client.post(job_url(j.id, action="requeue"), follow=True)
    assert j.status == "queued"
    assert "was requeued" in page.content.decode()
    # requeueing a queued job changes nothing and says why
    page = admin_client.post(job_url(j.id, action="requeue"), follow=True)
    assert "only failed or canceled jobs can be requeued" in page.content.decode()


def test_cancel_a_scheduled_job(admin_client, r):
    j = now_job(jobs.add.using(delay=60), 1, 2)
    assert j.status == "scheduled"
    page = admin_client.post(job_url(j.id, action="cancel"), follow=True)
    assert j.status == "canceled"
    assert "was canceled" in page.content.decode()
    assert get_queue().count("scheduled") == 0


def test_delete_a_job(admin_client, r):
    j = failed_job()
    page = admin_client.post(job_url(j.id, action="delete"))
    assert page.status_code == 302
    assert j.status is None
    assert get_queue().count("failed") == 0


def test_actions_are_post_only(admin_client, r):
    j = failed_job()
    for action in ("requeue", "cancel", "delete"):
        assert admin_client.get(job_url(j.id, action=action)).status_code == 405
    assert j.status == "failed"


def test_bulk_actions_on_selected_rows(admin_client, r):
    failed = [failed_job(f"n{i}") for i in range(3)]
    select = [f"default/{quote(j.id)}" for j in failed]
    page = admin_client.post(JOBS_URL, {"action": "requeue", "_selected_action": select[:2],
                                        "queue": "default", "state": "failed"}, follow=True)
    assert [j.status for j in failed] == ["queued", "queued", "failed"]
    assert "Requeued 2 jobs." in page.content.decode()
    page = admin_client.post(JOBS_URL, {"action": "cancel", "_selected_action": select},
                             follow=True)
    assert [j.status for j in failed] == ["canceled", "canceled", "failed"]
    assert "Canceled 2 jobs." in page.content.decode()
    assert "1 job had already ended" in page.content.decode()
    page = admin_client.post(JOBS_URL, {"action": "delete", "_selected_action": select})
    assert page.status_code == 302
    assert [j.status for j in failed] == [None, None, None]
    # nothing selected, unknown action, forged selection
    page = admin_client.post(JOBS_URL, {"action": "delete"}, follow=True)
    assert "Items must be selected" in page.content.decode()
    page = admin_client.post(JOBS_URL, {"action": "explode", "_selected_action": select},
                             follow=True)
    assert "No action selected" in page.content.decode()
    assert admin_client.post(JOBS_URL, {"action": "delete",
                                        "_selected_action": ["nope/x"]}).status_code == 400


def test_requeue_all_failed_asks_first(admin_client, r):
    for i in range(3):
        failed_job(f"n{i}")
    url = reverse("admin:django_redisq_queue_requeue_failed", args=["default"])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert "Are you sure?" in page.content.decode()
    assert get_queue().count("failed") == 3  # a GET changes nothing
    page = admin_client.post(url, {"post": "yes"}, follow=True)
    assert "Requeued 3 failed jobs" in page.content.decode()
    assert get_queue().counts()["failed"] == 0 and get_queue().count("queued") == 3


def test_empty_queue_asks_first(admin_client, r):
    for i in range(4):
        now_job(jobs.add, i, i)
    s = now_job(jobs.add.using(delay=60), 0, 0)
    url = reverse("admin:django_redisq_queue_empty", args=["default"])
    assert "4 queued jobs" in admin_client.get(url).content.decode()
    assert get_queue().count("queued") == 4
    page = admin_client.post(url, {"post": "yes"}, follow=True)
    assert "Deleted 4 queued jobs" in page.content.decode()
    assert get_queue().count("queued") == 0
    assert s.status == "scheduled"


# -- security ------------------------------------------------------------------------------------
def test_user_without_permission_gets_403(make_user, r):
    j = failed_job()
    c = client_for(make_user("nobody"))
    for url in (QUEUES_URL, JOBS_URL, WORKERS_URL, SCHEDULES_URL, job_url(j.id),
                reverse("admin:django_redisq_queue_requeue_failed", args=["default"]),
                reverse("admin:django_redisq_queue_empty", args=["default"])):
        assert c.get(url).status_code == 403, url
    for action in ("requeue", "cancel", "delete"):
        assert c.post(job_url(j.id, action=action)).status_code == 403
    assert c.post(JOBS_URL, {"action": "delete",
                             "_selected_action": [f"default/{j.id}"]}).status_code == 403
    assert j.status == "failed"


def test_non_staff_user_is_sent_to_the_login_page(make_user, r):
    j = failed_job()
    c = client_for(make_user("outsider", "view_job", "change_job", "delete_job", staff=False))
    page = c.post(job_url(j.id, action="delete"))
    assert page.status_code == 302 and "/login/" in page["Location"]
    assert c.get(job_url(j.id)).status_code == 302
    assert j.status == "failed"


def test_view_only_user_sees_pages_but_cannot_act(make_user, r):
    j = failed_job()
    q = now_job(jobs.add, 1, 1)
    c = client_for(make_user("viewer", "view_queue", "view_job", "view_worker", "view_schedule"))
    for url in (QUEUES_URL, JOBS_URL, WORKERS_URL, SCHEDULES_URL):
        assert c.get(url).status_code == 200, url
    html = c.get(job_url(j.id)).content.decode()
    assert "Traceback" in html
    assert job_url(j.id, action="requeue") not in html  # no buttons
    assert "Requeue all failed" not in c.get(QUEUES_URL).content.decode()
    for action in ("requeue", "cancel", "delete"):
        assert c.post(job_url(j.id, action=action)).status_code == 403
    for action in ("requeue", "cancel", "delete"):
        assert c.post(JOBS_URL, {"action": action,
                                 "_selected_action": [f"default/{j.id}"]}).status_code == 403
    for name in ("requeue_failed", "empty"):
        url = reverse(f"admin:django_redisq_queue_{name}", args=["default"])
        assert c.post(url, {"post": "yes"}).status_code == 403
    assert j.status == "failed" and q.status == "queued"


def test_change_permission_allows_requeue_but_not_delete(make_user, r):
    j = failed_job()
    c = client_for(make_user("operator", "view_queue", "view_job", "change_job"))
    assert c.post(job_url(j.id, action="delete")).status_code == 403
    assert c.post(reverse("admin:django_redisq_queue_empty", args=["default"])).status_code == 403
    assert c.post(job_url(j.id, action="requeue")).status_code == 302
    assert j.status == "queued"


def test_post_without_csrf_token_is_rejected(make_user, r):
    j = failed_job()
    c = client_for(make_user("csrf", "view_queue", "view_job", "change_job", "delete_job"),
                   enforce_csrf_checks=True)
    for action in ("requeue", "delete"):
        assert c.post(job_url(j.id, action=action)).status_code == 403
    assert c.post(JOBS_URL, {"action": "delete",
                             "_selected_action": [f"default/{j.id}"]}).status_code == 403
    url = reverse("admin:django_redisq_queue_requeue_failed", args=["default"])
    assert c.post(url, {"post": "yes"}).status_code == 403
    assert j.status == "failed"
    # with the token from the page, the same POST works
    html = c.get(job_url(j.id)).content.decode()
    token = html.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    assert c.post(job_url(j.id, action="requeue"),
                  {"csrfmiddlewaretoken": token}).status_code == 302
    assert j.status == "queued"


def test_duration_text():
    from django_redisq.admin_views import duration_text

    assert duration_text(None) == ""
    assert duration_text(0.0123) == "12 ms"
    assert duration_text(2.5) == "2.50 s"
    assert duration_text(185) == "3 min 5 s"
    assert duration_text(7 * 86400) == "7 d"
    assert duration_text(86400 + 7200 + 5) == "1 d 2 h"



# -- hostile or corrupt data in Redis ------------------------------------------------------------
def put_job(r, job_id, status="failed", queue="default", score=None, **fields):  # type: ignore[no-untyped-def]
    """Write a job hash (and its registry member) directly, as an older release, a bug or a
    hand-edit could have left it. ``job_id`` may be bytes (not UTF-8)."""
    q = get_queue(queue)
    key = q.keys.job_prefix.encode() + (job_id if isinstance(job_id, bytes) else job_id.encode())
    now = int(time.time() * 1000)
    h = {"v": 1, "id": job_id, "queue": queue, "func": "tests.jobs.add", "status": status,
         "ser": "json", "payload": "[[1,2],{}]", "attempts": 1, "enqueued_at": now}
    h.update(fields)
    r.delete(key)
    r.hset(key, mapping={k: v for k, v in h.items() if v is not None})
    if score is None:  # ended jobs are scored by expiry (a worker drops expired ones)
        score = now + 7 * 86_400_000 if status in ("finished", "failed", "canceled") else now
    r.zadd(q.keys.state(status), {job_id: score})
    return key


def selections(html: str) -> list[str]:
    import html as html_lib
    import re

    return [html_lib.unescape(v)
            for v in re.findall(r'name="_selected_action" value="([^"]*)"', html)]


def test_times_out_of_datetime_range_are_shown_raw(admin_client, r):
    # due 3 million days from now (the API accepted delay=timedelta(days=3_000_000)), a
    # corrupt enqueue time, and error times no datetime holds
    far = int(time.time() * 1000) + 3_000_000 * 86_400_000
    put_job(r, "far", "scheduled", score=far, scheduled_for=far, enqueued_at="1e18")
    put_job(r, "err", "failed", errors=json.dumps([{"type": "E", "message": "m", "at": 1e300}]))
    for url in (SCHEDULES_URL, jobs_url(queue="default", state="scheduled"), job_url("far"),
                jobs_url(queue="default", state="failed"), job_url("err")):
        page = admin_client.get(url)
        assert page.status_code == 200, url
    html = admin_client.get(job_url("far")).content.decode()
    assert f"out of range ({far})" in html and "out of range (1000000000000000000)" in html
    assert "out of range (1e+300)" in admin_client.get(job_url("err")).content.decode()


def test_last_moment_of_year_9999_east_of_utc(admin_client, r):
    at = 253_402_299_000_000  # 9999-12-31 23:30 UTC: year 10000 in Berlin
    put_job(r, "y9999", "scheduled", score=at, scheduled_for=at)
    with override_settings(TIME_ZONE="Europe/Berlin"):
        for url in (SCHEDULES_URL, jobs_url(queue="default", state="scheduled"),
                    job_url("y9999")):
            page = admin_client.get(url)
            assert page.status_code == 200, url
            assert "9999-12-31 23:30:00 UTC" in page.content.decode(), url


def test_workers_and_cron_with_times_out_of_range(admin_client, r):
    from django.conf import settings

    prefix = conf.redisq_settings().key_prefix
    now = int(r.time()[0]) * 1000
    r.zadd(workers_key(prefix), {"w-inf": float("inf"), "w-huge": now, "w-nan": now})
    r.hset(worker_key(prefix, "w-inf"), mapping={"queues": "default", "last_beat": "+inf"})
    r.hset(worker_key(prefix, "w-huge"), mapping={"queues": "default", "last_beat": "1e400",
                                                  "started": "1e18"})
    r.hset(worker_key(prefix, "w-nan"), mapping={"queues": "default", "last_beat": "nan"})
    for url in (WORKERS_URL, QUEUES_URL):
        assert admin_client.get(url).status_code == 200, url
    html = admin_client.get(WORKERS_URL).content.decode()
    assert "out of range (1e18)" in html and "not a time (+inf)" in html
    assert "dead" in html.split(">w-inf</th>")[1].split("</tr>")[0]
    cron = [{"every": 30, "func": "tests.jobs.add", "args": [1, 2], "name": "half"}]
    with override_settings(REDISQ={**settings.REDISQ, "CRON": cron}):
        for value in ("1e18", "1e400", "abc"):
            r.set(get_queue().keys.cron_last("half"), value)
            page = admin_client.get(SCHEDULES_URL)
            assert page.status_code == 200, value
            assert f"({value})" in page.content.decode()


@pytest.mark.parametrize("fields", [
    {"attempts": "abc"}, {"v": None}, {"error": "{not json"}, {"progress": "xyz"},
    {"timeout": "-5"}, {"enqueued_at": "1e400"},
], ids=lambda f: next(iter(f)))
def test_malformed_job_is_listed_shown_as_stored_and_deletable(admin_client, r, fields):
    ok = now_job(jobs.add, 1, 1)
    r.hset(get_queue().keys.job(ok.id), "status", "failed")
    r.zrem(get_queue().keys.state("queued"), ok.id)
    r.zadd(get_queue().keys.state("failed"), {ok.id: time.time() * 1000 + 86_400_000})
    put_job(r, "bad", "failed", func=XSS, **fields)
    page = admin_client.get(job_url("bad"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "This job's record is malformed" in html
    assert "&lt;script&gt;" in html and "<script>alert(1)" not in html
    assert f'action="{job_url("bad", action="delete")}"' in html
    assert f'action="{job_url("bad", action="requeue")}"' not in html
    listing = admin_client.get(jobs_url(queue="default", state="failed")).content.decode()
    assert "(malformed record)" in listing and "<script>alert(1)" not in listing
    assert sorted(selections(listing)) == sorted(["default/bad", f"default/{quote(ok.id)}"])
    found = admin_client.get(jobs_url(queue="default", q="bad")).content.decode()
    assert "Job id match." in found and selections(found) == ["default/bad"]
    page = admin_client.post(JOBS_URL, {"action": "delete", "_selected_action": ["default/bad"]},
                             follow=True)
    assert "Deleted 1 job." in page.content.decode()
    assert not r.exists(get_queue().keys.job("bad")) and ok.status == "failed"
    assert get_queue().count("failed") == 1


def test_malformed_waiting_job_can_be_canceled_from_its_page(admin_client, r):
    put_job(r, "badq", "queued", attempts="abc")
    html = admin_client.get(job_url("badq")).content.decode()
    assert f'action="{job_url("badq", action="cancel")}"' in html
    assert admin_client.post(job_url("badq", action="cancel")).status_code == 302
    assert get_queue().count("queued") == 0


def test_bytes_that_are_not_utf8_in_ids_and_statuses(admin_client, r):
    q = get_queue()
    put_job(r, b"\xffbad", "failed")
    r.zadd(q.keys.state("queued"), {b"\xfe": 1})  # a member without a hash
    failed = failed_job()
    page = admin_client.get(jobs_url(queue="default", state="failed"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "\\xffbad" in html  # shown escaped, without a link or a checkbox
    assert selections(html) == [f"default/{quote(failed.id)}"]
    assert admin_client.get(jobs_url(queue="default", state="queued")).status_code == 200
    for name in ("requeue_failed", "empty"):
        url = reverse(f"admin:django_redisq_queue_{name}", args=["default"])
        page = admin_client.post(url, {"post": "yes"}, follow=True)
        assert page.status_code == 200, name
    # a status that is not UTF-8
    for jid in ("s1", "s2", "s3", "s4"):
        put_job(r, jid, "failed")
        r.hset(q.keys.job(jid), "status", b"\xff\xfe")
    assert admin_client.get(job_url("s1")).status_code == 200
    for jid, action in (("s2", "requeue"), ("s3", "cancel")):
        page = admin_client.post(job_url(jid, action=action), follow=True)
        assert page.status_code == 200 and f"Job “{jid}” was not" in page.content.decode()
    page = admin_client.post(JOBS_URL, {"action": "cancel", "_selected_action": ["default/s4"]},
                             follow=True)
    assert page.status_code == 200
    page = admin_client.post(job_url("s1", action="delete"))
    assert page.status_code == 302 and not r.exists(q.keys.job("s1"))


def test_worker_job_entries_that_name_no_job_are_shown_unlinked(admin_client, r):
    prefix = conf.redisq_settings().key_prefix
    now = int(r.time()[0]) * 1000
    r.zadd(workers_key(prefix), {"w1": now})
    r.hset(worker_key(prefix, "w1"), mapping={
        "last_beat": now, "queues": "default", "jobs": "/abc,default/j1,nosep,high/"})
    page = admin_client.get(WORKERS_URL)
    assert page.status_code == 200
    row = page.content.decode().split(">w1</th>")[1].split("</tr>")[0]
    assert job_url("j1") in row
    for text in ("/abc", "nosep", "high/"):
        assert f'<span class="redisq-id">{text}</span>' in row


def test_rows_and_actions_use_the_key_the_job_was_read_under(admin_client, r):
    qh = get_queue("high")
    put_job(r, "victim", "finished", queue="high")
    # stored under "bad" in queue default, but its fields say it is "victim" of queue "high"
    put_job(r, "bad", "failed")
    r.hset(get_queue().keys.job("bad"), mapping={"id": "victim", "queue": "high"})
    html = admin_client.get(jobs_url(queue="default", state="failed")).content.decode()
    assert selections(html) == ["default/bad"]
    assert job_url("bad") in html and job_url("victim", "high") not in html
    detail = admin_client.get(job_url("bad")).content.decode()
    assert f'action="{job_url("bad", action="delete")}"' in detail
    assert f'action="{job_url("bad", action="requeue")}"' in detail
    assert "the key it is stored under" in detail
    admin_client.post(JOBS_URL, {"action": "delete", "_selected_action": selections(html)})
    assert r.exists(qh.keys.job("victim")) and not r.exists(get_queue().keys.job("bad"))


def test_jobs_with_control_characters_in_their_ids(admin_client, r):
    odd = ["order\t42", "cr\rlf\n", "nul\x00", "bidi\u202e"]
    for jid in ["plain-1", *odd]:
        put_job(r, jid, "queued")
    html = admin_client.get(jobs_url(queue="default", state="queued")).content.decode()
    assert "order\\x0942" in html and "bidi\\u202e" in html  # shown escaped
    chosen = selections(html)
    # no control characters: an HTML form would change a CR, drop a NUL
    assert len(chosen) == 5 and not any(ch < " " for v in chosen for ch in v)
    import re

    links = re.findall(r'<a href="(/admin/django_redisq/job/default/[^"]+)">', html)
    assert len(links) == 5 and all(admin_client.get(u).status_code == 200 for u in links)
    page = admin_client.post(JOBS_URL, {"action": "cancel", "_selected_action": chosen},
                             follow=True)
    assert "Canceled 5 jobs." in page.content.decode()
    # a selection with values that name no job still acts on the others, and says so
    put_job(r, "f1", "failed")
    page = admin_client.post(JOBS_URL, {"action": "delete", "_selected_action": [
        "default/f1", "nope/x", "default/" + "y" * 300]}, follow=True)
    text = page.content.decode()
    assert page.status_code == 200 and "Deleted 1 job." in text
    assert "2 selected values named no job of a configured queue" in text
    assert not r.exists(get_queue().keys.job("f1"))


def test_job_key_of_another_type(admin_client, r):
    q = get_queue()
    r.set(q.keys.job("strkey"), "x")
    r.zadd(q.keys.state("failed"), {"strkey": time.time() * 1000 + 86_400_000})
    failed = failed_job()
    page = admin_client.get(job_url("strkey"))
    assert page.status_code == 200 and "holds a Redis string, not a hash" in page.content.decode()
    page = admin_client.get(jobs_url(queue="default", state="failed"))
    assert page.status_code == 200
    assert sorted(selections(page.content.decode())) == sorted(
        ["default/strkey", f"default/{quote(failed.id)}"])
    for action in ("requeue", "cancel"):
        page = admin_client.post(job_url("strkey", action=action), follow=True)
        assert page.status_code == 200 and "not a job record" in page.content.decode()
    page = admin_client.post(JOBS_URL, {"action": "requeue", "_selected_action": [
        "default/strkey", f"default/{quote(failed.id)}"]}, follow=True)
    assert "Requeued 1 job." in page.content.decode() and failed.status == "queued"
    assert "1 job could not be read" in page.content.decode()
    url = reverse("admin:django_redisq_queue_requeue_failed", args=["default"])
    page = admin_client.post(url, {"post": "yes"}, follow=True)  # the key is no job to requeue
    assert page.status_code == 200 and "Requeued 0 failed jobs" in page.content.decode()
    assert admin_client.post(job_url("strkey", action="delete")).status_code == 302
    assert not r.exists(q.keys.job("strkey")) and q.count("failed") == 0


def test_ids_that_are_dot_segments_get_urls_browsers_keep(admin_client, r):
    import re
    from urllib.parse import urljoin

    for jid in (".", "..", "a.b"):
        put_job(r, jid, "failed")
    html = admin_client.get(jobs_url(queue="default", state="failed")).content.decode()
    links = re.findall(r'<a href="(/admin/django_redisq/job/default/[^"]+)">', html)
    assert len(links) == 3
    for url in links:
        assert urljoin("http://testserver/x/", url) == "http://testserver" + url  # no "/../"
    for jid in (".", ".."):
        url = next(u for u in links if u.endswith(f"/{jid.replace('.', '_2E')}/"))
        detail = admin_client.get(url).content.decode()
        delete = re.findall(r'action="([^"]+/delete/)"', detail)[0]
        assert urljoin("http://testserver/x/", delete) == "http://testserver" + delete
        assert admin_client.post(delete).status_code == 302
        assert not r.exists(get_queue().keys.job(jid))
    assert r.exists(get_queue().keys.job("a.b"))
