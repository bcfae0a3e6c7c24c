"""Signals sent by workers, for observers (metrics, audit logs).

Each is sent with ``sender`` = the job's function name and ``job`` = its ``JobRecord``;
``job_finished`` adds ``result``, ``job_failed`` adds ``exc``. Receivers of jobs run by async
workers are called through ``Signal.asend``, so plain (sync) receivers may use the ORM.
"""

from django.dispatch import Signal

job_started = Signal()
job_finished = Signal()
job_failed = Signal()
