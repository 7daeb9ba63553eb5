"""The answers, as plain data: what the report prints, `report --json` gives, and the dashboard draws.

Read from the results (results/reader.py) in one snapshot, so they can be asked at any time, also while the
job writes. A window whose end is at or before the job's watermark is final; a later one is still open. A
call that arrives after its window was final still counts in it, and the window is reported as revised.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from .errors import UserError
from .dashboard.health import DEFAULT_STALL_AFTER_S, assess, job_state
from .results import ResultsPlace, ResultsReader, as_place
from .sf_time import ZONE, local_time
from .stream.watermarks import holding_back

RECENT_WINDOWS = 24  # windows in the "how the top 5 moved" series
RECENT_BATCHES = 60  # micro-batches in the pipeline's health
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def answers(place: ResultsPlace | str | Path, top: int = 20, windows: int = RECENT_WINDOWS,
            stall_after_s: float = DEFAULT_STALL_AFTER_S) -> dict:
    """Every answer the report and the dashboard show, as plain data (the `--json` output).

    `windows` is how many of the latest windows the top-5 series covers; `stall_after_s` is when waiting
    messages with no batch make the job's health "stalled".
    """
    with as_place(place).open_reader() as results:
        try:
            return read_answers(results, top, windows, stall_after_s)
        except results.database.errors() as error:
            raise UserError(f"cannot read the results in {results.where}: {error}") from None


def read_answers(results: ResultsReader, top: int, recent: int, stall_after_s: float) -> dict:
    meta, watermark = results.meta(), results.watermark()
    by_window: dict[tuple[int, int], list[tuple[str, int]]] = {}  # (start, end) -> [(crime type, calls)]
    for start, end, name, count in results.window_counts():
        by_window.setdefault((start, end), []).append((name, count))
    windows = sorted((start, end, sum(n for _, n in rows)) for (start, end), rows in by_window.items())
    top_types = results.top_crime_types(top)
    top_names = [name for name, _ in top_types[:5]]
    late = results.late_calls()
    return {
        "total_calls": results.total_calls(),
        "malformed": results.malformed(),
        "late": late,  # late calls, counted all the same
        "late_calls_counted": late,
        "revised_windows": results.revised_windows(),
        "duplicates": results.duplicates(),
        "top_crime_types": [{"crime_type": name, "count": n} for name, n in top_types],
        "top_locations": [{"address": a, "count": n} for a, n in results.top_locations(top)],
        "dispositions": [{"code": c, "description": d, "count": n} for c, d, n in results.dispositions()],
        "malformed_reasons": results.malformed_reasons(),
        "watermark": local_time(watermark) if watermark else None,
        "windows": _windows(meta, by_window, windows, watermark, recent),
        "calls_by_hour": _by_hour(results, top_names),
        "calls_by_day": _by_day(results, top_names),
        "calls_by_weekday_hour": _by_weekday_hour(results, int(meta.get("pane_seconds", 3600))),
        "batches": results.batches(),
        "data_loss": _data_loss(results),
        "event_time_range": _range(results, int(meta.get("pane_seconds", 3600))),
        "pipeline": _pipeline(results, stall_after_s),
    }


def _windows(meta: dict, by_window: dict, windows: list[tuple], watermark: float | None, recent: int) -> dict:
    final_windows = [w for w in windows if watermark is not None and w[1] <= watermark]

    def window(start_end: tuple | None) -> dict | None:
        """A window with its top crime types, and whether more calls may still count in it."""
        if start_end is None:
            return None
        counts = sorted(by_window[start_end[:2]], key=lambda r: (-r[1], r[0]))
        return {"start": local_time(start_end[0]), "end": local_time(start_end[1]),
                "final": watermark is not None and start_end[1] <= watermark,
                "top_crime_types": [{"crime_type": c, "count": n} for c, n in counts[:10]]}

    return {
        "length": meta.get("window"), "slide": meta.get("slide"),
        "count": len(windows),
        "final": len(final_windows),
        "open": len(windows) - len(final_windows),
        "latest": window(windows[-1] if windows else None),
        "last_final": window(final_windows[-1] if final_windows else None),
        "recent": _recent_windows(by_window, windows[-recent:], watermark),
    }


def _data_loss(results: ResultsReader) -> dict:
    """Messages Kafka deleted before the job read them (--accept-data-loss): the answers are short of them."""
    rows = results.data_loss()
    return {"messages": sum(r[3] for r in rows), "exact": not rows,
            "ranges": [{"partition": p, "from_offset": lo, "to_offset": hi, "messages": n} for p, lo, hi, n in rows]}


def loss_line(result: dict) -> str | None:
    loss = result.get("data_loss") or {}
    if not loss.get("messages"):
        return None
    where = ", ".join(f"partition {r['partition']} offsets {r['from_offset']:,} to {r['to_offset'] - 1:,}"
                      for r in loss["ranges"])
    return (f"Not exact: Kafka's retention deleted {loss['messages']:,} messages before the job read them ({where}); "
            "every answer is short of the calls they held.")


def _recent_windows(by_window: dict, recent: list[tuple], watermark: float | None) -> dict:
    """How the top 5 crime types of the latest windows moved, window by window."""
    by_type: dict[str, int] = {}
    for start, end, _ in recent:
        for name, count in by_window[(start, end)]:
            by_type[name] = by_type.get(name, 0) + count
    names = [name for name, _ in sorted(by_type.items(), key=lambda r: (-r[1], r[0]))[:5]]
    return {"crime_types": names, "windows": [
        {"start": local_time(start), "end": local_time(end), "final": watermark is not None and end <= watermark,
         "calls": total, "counts": [dict(by_window[(start, end)]).get(name, 0) for name in names]}
        for start, end, total in recent]}


def _by_weekday_hour(results: ResultsReader, pane_seconds: int) -> list[list[int]] | None:
    """Calls by day of week (Monday first) x hour of day, San Francisco time, summed from the window panes.

    Exact when a pane lies within one clock hour (slides that divide an hour); None for coarser panes.
    """
    if 3600 % pane_seconds:
        return None
    matrix = [[0] * 24 for _ in WEEKDAYS]
    for pane_start, count in results.pane_totals():
        moment = datetime.fromtimestamp(pane_start, timezone.utc).astimezone(ZONE)
        matrix[moment.weekday()][moment.hour] += count
    return matrix


def _pipeline(results: ResultsReader, stall_after_s: float) -> dict:
    """The job's health per micro-batch (newest last), and whether it is running now."""
    meta = results.meta()
    last_written = results.last_written()
    clocks = results.clocks()
    held = holding_back(clocks)
    job = job_state(meta.get("spark_ui_url"), meta.get("spark_app_id"), results.job_pid())
    return {"job": job, "health": assess(meta, last_written, clocks, job, stall_after_s).summary(),
            "spark_ui_url": meta.get("spark_ui_url"), "spark_app_id": meta.get("spark_app_id"),
            "last_batch_written_at": last_written,  # epoch seconds
            "idle_timeout_s": float(meta["idle_timeout_seconds"]) if "idle_timeout_seconds" in meta else None,
            "watermark_held_by": held, "idle_partitions": sorted(p for p, c in clocks.items() if c.idle),
            "partitions": [{"partition": p, "event_time": None if c.event_time is None else local_time(c.event_time),
                            "read_to": c.read_to, "end_offset": c.end_offset, "unread": c.unread, "idle": c.idle,
                            "quiet_since": c.grew_at,  # epoch seconds: its end offset last grew, or first seen
                            "holds_watermark": p == held} for p, c in sorted(clocks.items())],
            "batches": results.recent_batches(RECENT_BATCHES)}


def _by_hour(results: ResultsReader, names: list[str]) -> dict[str, list[int]]:
    result = {name: [0] * 24 for name in names}
    for hour, name, count in results.by_hour(names):
        result[name][hour] += count
    return result


def _by_day(results: ResultsReader, names: list[str]) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {name: {} for name in names}
    for day, name, count in results.by_day(names):
        result[name][day] = count
    return result


def _range(results: ResultsReader, pane_seconds: int) -> dict | None:
    first, last = results.pane_range()
    if first is None:
        return None
    return {"from": local_time(first), "to": local_time(last + pane_seconds)}
