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
    assert admin_client.get(job_url("a\nb")).status_code == 400
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
