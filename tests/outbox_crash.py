"""Run as a subprocess by the outbox tests: enqueue through the outbox in a transaction and
die by SIGKILL right after the commit, before the push.

Its own on-commit hook is registered before ``.delay()``'s, and Django runs on-commit hooks in
registration order, so the process is killed after COMMIT and before the push hook runs.
Prints the job id first. Usage, from the repository root: python -m tests.outbox_crash KEY
"""

import os
import signal
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from django.db import transaction  # noqa: E402

from tests.jobs import outbox_count  # noqa: E402

with transaction.atomic():
    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
    job = outbox_count.delay(sys.argv[1])
    print(job.id, flush=True)
print("not killed", flush=True)  # never reached
