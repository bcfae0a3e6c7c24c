# django-redisq's fixtures (redisq_eager, redisq_run_jobs) for this project's tests.
pytest_plugins = ["django_redisq.pytest_plugin"]
