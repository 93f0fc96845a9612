"""Verdicts: the run stopped because of the data or the request, not because of a crash.

A verdict (a blocking anomaly, an empty table, a missing column, no training rows, a parity gap)
ends the same way however often it is retried, so command lines exit with
:data:`EXIT_VERDICT` and schedulers fail the task at once; anything else is a crash (exit 1),
worth a retry.
"""

EXIT_VERDICT = 3


class Verdict(Exception):
    """Base of every exception that stops a run on purpose; the message says why."""
