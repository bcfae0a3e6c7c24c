"""Settings for the test suite. The Redis URL comes from the private redis-server that the
test session starts (tests/conftest.py exports it as REDISQ_TEST_REDIS_URL)."""

import os
import tempfile

import django
import environ

env = environ.Env()

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_redisq",
    "tests.testapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# SQLite by default (a file, so worker subprocesses and threads see the same data);
# REDISQ_TEST_DB=postgres switches to the PostgreSQL on 127.0.0.1:5432.
if os.environ.get("REDISQ_TEST_DB") == "postgres":
    DATABASES = {"default": env.db_url_config(
        os.environ.get("REDISQ_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test"))}
    # A test database of our own (sessions running at once must not drop each other's), and
    # REDISQ_TEST_PG_NAME points worker subprocesses, which are not in test mode, at it.
    DATABASES["default"]["TEST"] = {"NAME": f"test_redisq_{os.getpid()}"}
    if os.environ.get("REDISQ_TEST_PG_NAME"):
        DATABASES["default"]["NAME"] = os.environ["REDISQ_TEST_PG_NAME"]
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("REDISQ_TEST_SQLITE", "redisq-tests.sqlite3"),
            # A file, not memory: worker subprocesses open the test database too.
            # One per test process, so that parallel runs do not share it.
            "TEST": {"NAME": os.path.join(tempfile.gettempdir(),
                                          f"redisq-test-db-{os.getpid()}.sqlite3")},
        }
    }

STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

REDIS_URL = env("REDISQ_TEST_REDIS_URL", default="redis://127.0.0.1:6399/0")

REDISQ = {
    "QUEUES": {
        "default": {"URL": REDIS_URL},
        "high": {"URL": REDIS_URL},
        "low": {"URL": REDIS_URL},
    },
    # tests.tasks_django declares django.tasks tasks, which exist from Django 6.0 on.
    "IMPORTS": ["tests.jobs", *(["tests.tasks_django"] if django.VERSION >= (6, 0) else []),
                # The --reload test's worker imports a module the test writes; the reliability
                # tests' workers import tests.chaos.jobs.
                *env.list("REDISQ_TEST_EXTRA_IMPORTS", default=[])],
    # Worker subprocesses of the recovery tests use short leases (set through the environment).
    "LEASE": env.float("REDISQ_TEST_LEASE", default=30.0),
    "HEARTBEAT": env.float("REDISQ_TEST_HEARTBEAT", default=5.0),
    "SHUTDOWN_GRACE": env.float("REDISQ_TEST_GRACE", default=30.0),
    # Worker subprocesses of the cron tests get their schedules through the environment.
    "CRON": env.json("REDISQ_TEST_CRON", default=[]),
    # The outbox tests (tests/outbox_pg_cases.py, run on PostgreSQL) relay quickly.
    "OUTBOX_POLL_INTERVAL": 0.2,
    "OUTBOX_RELAY_AFTER": env.float("REDISQ_TEST_OUTBOX_AFTER", default=1.0),
}
if os.environ.get("REDISQ_TEST_OUTBOX"):
    REDISQ["QUEUES"]["outbox"] = {"URL": REDIS_URL, "OUTBOX": True}
# Worker subprocesses of the outage, Sentinel and Cluster tests get their own queues.
if os.environ.get("REDISQ_TEST_QUEUES"):
    REDISQ["QUEUES"] = env.json("REDISQ_TEST_QUEUES")

if django.VERSION >= (6, 0):
    TASKS = {
        "default": {
            "BACKEND": "django_redisq.tasks_backend.RedisQBackend",
            "QUEUES": ["default", "high", "low"],
        }
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_redisq": {"handlers": ["stderr"], "level": "INFO"}},
}

# Worker subprocesses of the tracing tests record their spans (tests/otel_worker.py).
if os.environ.get("REDISQ_TEST_OTEL_FILE"):
    from tests import otel_worker

    otel_worker.install(os.environ["REDISQ_TEST_OTEL_FILE"])

# The metrics view's bearer token (tests/test_observability.py).
REDISQ["METRICS_TOKEN"] = "test-metrics-token"
