"""Settings for the example project's tests: jobs run eagerly, in the test process.

Nothing here needs Redis: with ``MODE = "eager"``, ``.delay()`` runs the job at once and
returns a finished handle. (django-redisq's own CI runs this suite with ``REDIS_URL`` pointing
at a closed port, to prove it.)
"""

from .settings import *  # noqa: F403
from .settings import REDISQ

REDISQ = {**REDISQ, "MODE": "eager"}
