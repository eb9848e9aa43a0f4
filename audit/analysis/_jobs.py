"""``n_jobs`` of the analyses that spread their work over worker processes (scikit-learn's convention:
a positive count, -1 for every core this process may use, None for one process)."""
from __future__ import annotations

import numpy as np

ERROR_N_JOBS = "n_jobs must be a positive integer, -1 (all cores) or None (one process), got {value!r}"


def check_n_jobs(n_jobs) -> None:
    """Raise :class:`audit.errors.InputError` (:data:`ERROR_N_JOBS`) unless ``n_jobs`` is None, -1 or a
    positive integer."""
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer))
                               or not (n_jobs >= 1 or n_jobs == -1)):
        from audit.errors import InputError

        raise InputError(ERROR_N_JOBS.format(value=n_jobs))


def n_workers(n_jobs, *, at_most: int) -> int:
    """Worker processes for a checked ``n_jobs``: -1 is the cores this process may use (affinity and container
    quotas, joblib's ``cpu_count``), None is 1; never more than ``at_most`` (units of work), never less than 1."""
    if n_jobs == -1:
        from joblib import cpu_count

        jobs = cpu_count()
    else:
        jobs = 1 if n_jobs is None else int(n_jobs)
    return max(1, min(jobs, at_most))
