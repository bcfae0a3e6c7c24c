"""Tests of the demo app's jobs, in eager mode: no worker, no Redis.

``.delay()`` runs each job at once, through the same argument checks and serializer as the
real queue, and returns a finished handle: ``status``, ``result``, ``get()``, ``exc_info``.
"""

from __future__ import annotations

import asyncio

import pytest
from demo_app.tasks import fetch_title, resize_image, send_welcome_email, sync_inventory
from django.contrib.auth import get_user_model

from django_redisq import JobFailed


@pytest.mark.django_db
def test_welcome_email():
    user = get_user_model().objects.create_user("ada", "ada@example.com")
    job = send_welcome_email.delay(user.pk)
    assert job.status == "finished"
    assert job.result == "welcome email sent to ada <ada@example.com>"


def test_async_job():
    assert fetch_title.delay("https://example.com/").get() == "Title of https://example.com/"


def test_async_job_from_async_code():
    async def view() -> str:
        job = await fetch_title.adelay("https://example.com/")
        return await job.aget()

    assert asyncio.run(view()) == "Title of https://example.com/"


def test_failing_job():
    job = resize_image.delay("/no/such/file.png")
    assert job.status == "failed"
    assert "FileNotFoundError" in job.exc_info
    with pytest.raises(JobFailed, match=r"no image at /no/such/file\.png"):
        job.get()


def test_retried_job_succeeds_on_its_second_attempt():
    job = sync_inventory.delay("SKU-1")  # Retry(max=3): eager mode retries at once
    assert (job.get(), job.attempts) == ("synced SKU-1 on attempt 2", 2)


def test_bad_arguments_fail_in_the_caller():
    with pytest.raises(TypeError, match="not JSON serializable"):
        resize_image.delay(object())  # the real queue would reject it too
    with pytest.raises(TypeError, match="resize_image"):
        resize_image.delay()  # missing argument


def test_the_fixture_works_too(redisq_eager):
    # redisq_eager turns eager mode on for one test (this suite has it on already).
    assert resize_image.delay("/missing").status == "failed"
