"""Found by the workers' autodiscovery (every app's ``jobs`` module): registers the test jobs
for projects whose settings have no ``REDISQ["IMPORTS"]`` (the django-rq settings test)."""

from tests.jobs import *  # noqa: F403
