"""San Francisco local time: the calls' call_date_time is recorded in it, with no offset, and people read it.

One name for the zone (ZONE_NAME, as Spark's session and --timezone take it; ZONE, as Python's datetime
takes it), and the one way every part prints a moment.
"""

from __future__ import annotations

from datetime import datetime, timezone

from dateutil import tz

ZONE_NAME = "America/Los_Angeles"
ZONE = tz.gettz(ZONE_NAME)


def local_time(epoch_seconds: float, named: bool = False) -> str:
    """San Francisco local time, as the calls are recorded; `named` adds the zone (PST or PDT) for people."""
    moment = datetime.fromtimestamp(epoch_seconds, timezone.utc).astimezone(ZONE)
    return moment.strftime("%Y-%m-%d %H:%M %Z" if named else "%Y-%m-%d %H:%M")
