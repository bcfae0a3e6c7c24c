"""The admin's Queues section in a real browser (headless Chromium through Selenium).

These tests are not skipped when Chromium is missing: they fail and say how to get it
(scripts/test installs chromium and chromium-driver on Debian).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_redisq import get_queue
from tests import jobs
from tests.conftest import wait_for
from tests.test_admin import (
    QUEUES_URL,
    SCHEDULES_URL,
    WORKERS_URL,
    XSS,
    burst,
    failed_job,
    job_url,
    jobs_url,
    now_job,
)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Seconds to wait for a page (generous: CI machines run other tests meanwhile).
WAIT = 30

pytestmark = pytest.mark.django_db(transaction=True)


def _find(path: str, *names: str) -> str | None:
    if Path(path).exists():
        return path
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[test]' (or run scripts/test)")
    chromium = _find(CHROMIUM, "chromium", "chromium-browser")
    chromedriver = _find(CHROMEDRIVER, "chromedriver")
    if chromium is None or chromedriver is None:
        pytest.fail("Chromium and its driver are needed for the admin browser tests: run "
                    "scripts/test (it installs them), or apt-get install -y chromium "
                    "chromium-driver")
    profile = tempfile.mkdtemp(prefix="redisq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                "--window-size=1280,900"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(driver, live_server, django_user_model):  # type: ignore[no-untyped-def]
    """The browser, logged in to the admin as a staff superuser."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    django_user_model.objects.create_superuser("boss", "boss@example.com", "pw")
    # Logging in is idempotent, so a Chromium hiccup during it ("unhandled inspector error"
    # under load) is retried; the tests' own clicks never are.
    for attempt in range(3):
        try:
            driver.delete_all_cookies()
            driver.get(f"{live_server.url}/admin/login/")
            driver.find_element(By.NAME, "username").send_keys("boss")
            driver.find_element(By.NAME, "password").send_keys("pw")
            click(driver, "input[type=submit]")
            break
        except WebDriverException:
            if attempt == 2:
                raise
    assert "boss" in text(driver, "#user-tools").lower()  # logged in
    driver.base = live_server.url
    return driver


def go(browser, path: str) -> str:  # type: ignore[no-untyped-def]
    browser.get(browser.base + path)
    return str(browser.page_source)


def text(browser, css: str) -> str:  # type: ignore[no-untyped-def]
    """The element's text (waiting for it: a click's page load may still be under way)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # Find and read in one step, again if a redirect replaced the node in between (Chromium
    # reports that as a stale element, or as an "unhandled inspector error").
    return str(WebDriverWait(browser, WAIT, ignored_exceptions=(
        StaleElementReferenceException, WebDriverException)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css).text or " "))


def click(browser, css: str) -> None:  # type: ignore[no-untyped-def]
    """Click and wait until the page it leads to has replaced this one."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, css).click()

    def replaced(_driver) -> bool:  # type: ignore[no-untyped-def]
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            # Chromium sometimes reports a node of the replaced page this way instead.
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    WebDriverWait(browser, WAIT).until(replaced)


def test_queues_page_shows_counts(browser, r):  # type: ignore[no-untyped-def]
    failed_job()
    for i in range(3):
        now_job(jobs.add, i, i)
    go(browser, QUEUES_URL)
    row = 'tr[data-queue="default"]'
    assert text(browser, f'{row} td[data-state="queued"]') == "3"
    assert text(browser, f'{row} td[data-state="failed"]') == "1"
    assert text(browser, 'tr[data-queue="high"] td[data-state="queued"]') == "0"
    assert "failed jobs" in text(browser, ".object-tools").lower()


def test_failed_job_traceback_then_requeue(browser, r):  # type: ignore[no-untyped-def]
    j = failed_job("it broke here")
    go(browser, jobs_url(queue="default", state="failed"))
    click(browser, f'a[href="{job_url(j.id)}"]')
    assert "Traceback (most recent call last)" in text(browser, "#job-errors")
    assert "ValueError: it broke here" in text(browser, "#job-errors")
    assert text(browser, "#job-status") == "failed"
    click(browser, "input[name=requeue]")
    assert "was requeued" in text(browser, ".messagelist")
    assert text(browser, "#job-status") == "queued"
    assert j.status == "queued"


def test_cancel_a_scheduled_job(browser, r):  # type: ignore[no-untyped-def]
    j = now_job(jobs.add.using(delay=60), 1, 2)
    go(browser, job_url(j.id))
    assert text(browser, "#job-status") == "scheduled"
    click(browser, "input[name=cancel]")
    assert "was canceled" in text(browser, ".messagelist")
    assert text(browser, "#job-status") == "canceled"
    assert j.status == "canceled"


def test_delete_a_job(browser, r):  # type: ignore[no-untyped-def]
    j = failed_job()
    go(browser, job_url(j.id))
    click(browser, "input[name=delete]")
    assert "was deleted" in text(browser, ".messagelist")
    assert j.status is None
    assert get_queue().count("failed") == 0


def test_bulk_requeue_from_the_list(browser, r):  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    failed = [failed_job(f"n{i}") for i in range(2)]
    go(browser, jobs_url(queue="default", state="failed"))
    browser.find_element(By.ID, "action-toggle").click()  # Django's actions.js selects all
    assert all(box.is_selected() for box in browser.find_elements(By.NAME, "_selected_action"))
    assert "2 of 2 selected" in text(browser, ".action-counter")
    Select(browser.find_element(By.NAME, "action")).select_by_value("requeue")
    click(browser, "button[name=index]")
    assert "Requeued 2 jobs." in text(browser, ".messagelist")
    assert [j.status for j in failed] == ["queued", "queued"]


def test_script_in_job_data_does_not_run(browser, r):  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import NoAlertPresentException

    j = now_job(jobs.echo, XSS)
    burst()
    f = failed_job(XSS)
    for path in (job_url(j.id), job_url(f.id), jobs_url(queue="default", state="failed")):
        html = go(browser, path)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert  # noqa: B018 - raises when no alert is open


def test_tables_scroll_at_phone_width(browser, r):  # type: ignore[no-untyped-def]
    """At 375 px the page itself never scrolls sideways; a wide table scrolls in its box."""
    j = failed_job("x" * 300)
    browser.set_window_size(375, 800)
    try:
        for path in (QUEUES_URL, jobs_url(queue="default", state="failed"), WORKERS_URL,
                     SCHEDULES_URL, job_url(j.id)):
            go(browser, path)
            page_fits, table_reachable, overflow = browser.execute_script(
                "const r = document.querySelector('.results, .redisq-scroll');"
                "const t = r.querySelector('table');"
                "return [document.documentElement.scrollWidth <= window.innerWidth + 1,"
                " r.scrollWidth + 1 >= t.getBoundingClientRect().width,"
                " getComputedStyle(r).overflowX];")
            assert page_fits, path
            assert table_reachable and overflow in ("auto", "scroll"), path
    finally:
        browser.set_window_size(1280, 900)


def test_running_job_page_follows_its_progress_by_itself(browser, worker_thread, r):  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    j = now_job(jobs.stepped_progress)
    assert jobs.PROGRESS_REPORTED.wait(WAIT)
    wait_for(lambda: j.progress == 0.5, timeout=10)
    go(browser, job_url(j.id))
    assert "50.0 %" in text(browser, "#job-progress")
    assert text(browser, "#job-status") == "started"
    jobs.PROGRESS_STEP.set()
    # No navigation from here on: the page reloads itself while the job runs.
    WebDriverWait(browser, WAIT).until(
        lambda _d: "75.0 % — three quarters" in text(browser, "#job-progress"))
    jobs.PROGRESS_GO.set()
    WebDriverWait(browser, WAIT).until(lambda _d: text(browser, "#job-status") == "finished")
    assert 'http-equiv="refresh"' not in browser.page_source
