"""A django-rq project's settings, unchanged but for INSTALLED_APPS: RQ_QUEUES as django-rq's
documentation writes it (HOST/PORT/DB and URL entries), and no REDISQ at all."""

import os
from urllib.parse import urlsplit

from tests.settings import *  # noqa: F403

del REDISQ  # noqa: F821 - a django-rq project has none

_url = os.environ.get("REDISQ_TEST_REDIS_URL", "redis://127.0.0.1:6399/0")
_parts = urlsplit(_url)

RQ_QUEUES = {
    "default": {
        "HOST": _parts.hostname,
        "PORT": _parts.port,
        "DB": 0,
        "PASSWORD": "",
        "DEFAULT_TIMEOUT": 360,
    },
    "high": {
        "URL": os.getenv("REDISTOGO_URL", _url),  # as in django-rq's README
        "DEFAULT_TIMEOUT": 500,
    },
    "low": {
        "HOST": _parts.hostname,
        "PORT": _parts.port,
        "DB": 0,
    },
}
