"""The errors a person reads: one line each, never a traceback (cli.py prints them)."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad file, unreachable broker): one line, exit 1, no traceback."""


class FlagConflict(UserError):
    """Flags that each parse but contradict each other: a usage error, so exit 2 with the usage, as argparse does."""


class TopicMissing(UserError):
    """The topic is not on the broker (an in-memory broker loses its topics when it restarts)."""
