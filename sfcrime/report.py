"""The answers, from the streaming job's results: tables on the terminal, JSON, and a Markdown page with charts.

It reads the results read-only, so it can run at any time, also while the job writes. A window whose end
is at or before the job's watermark (the latest event time so far minus --watermark) is final; a later one
is still open. A call that arrives after its window was final still counts in it, and the window is
reported as revised.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .config import UserError
from .dashboard.health import DEFAULT_STALL_AFTER_S, assess, job_state
from .dataset import SF_TZ
from .glossary import MEANINGS, labelled, meaning
from .results import connect, lock_holder, path_in, read_clocks, watermark_of, window_counts
from .stream.watermarks import holding_back

log = logging.getLogger(__name__)
REPORT_DIR = "report"  # in the job's output folder
CHART_DIR = "charts"
RECENT_WINDOWS = 24  # windows in the "how the top 5 moved" series
RECENT_BATCHES = 60  # micro-batches in the pipeline's health
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _pyplot():
    """matplotlib's pyplot without a display (the report runs in terminals, tests and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:,.0f}")


def local_time(epoch_seconds: float, named: bool = False) -> str:
    """San Francisco local time, as the calls are recorded; `named` adds the zone (PST or PDT) for people."""
    moment = datetime.fromtimestamp(epoch_seconds, timezone.utc).astimezone(SF_TZ)
    return moment.strftime("%Y-%m-%d %H:%M %Z" if named else "%Y-%m-%d %H:%M")


def answers(output: str | Path, top: int = 20, windows: int = RECENT_WINDOWS,
            stall_after_s: float = DEFAULT_STALL_AFTER_S) -> dict:
    """Every answer the report and the dashboard show, as plain data (the `--json` output).

    `windows` is how many of the latest windows the top-5 series covers; `stall_after_s` is when waiting
    messages with no batch make the job's health "stalled".
    """
    with connect(path_in(output), readonly=True) as db:
        try:
            db.execute("BEGIN")  # one snapshot: a batch committed meanwhile shows whole or not at all
            return _answers(db, top, windows, lock_holder(output), stall_after_s)
        except sqlite3.DatabaseError as error:
            raise UserError(f"cannot read the results in {output}: {error}") from None


def _answers(db: sqlite3.Connection, top: int, recent: int, job_pid: int | None, stall_after_s: float) -> dict:
    one = lambda sql, *a: db.execute(sql, a).fetchone()[0]  # noqa: E731
    meta = dict(db.execute("SELECT key, value FROM meta"))
    watermark = watermark_of(meta)
    by_window: dict[tuple[int, int], list[tuple[str, int]]] = {}  # (start, end) -> [(crime type, calls)]
    for start, end, name, count in window_counts(db):
        by_window.setdefault((start, end), []).append((name, count))
    windows = sorted((start, end, sum(n for _, n in rows)) for (start, end), rows in by_window.items())
    top_types = db.execute("SELECT crime_type, SUM(count) n FROM crime_type_panes GROUP BY crime_type "
                           "ORDER BY n DESC, crime_type LIMIT ?", (top,)).fetchall()
    top_names = [name for name, _ in top_types[:5]]
    latest_window = windows[-1] if windows else None
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
        "total_calls": one("SELECT COALESCE(SUM(count), 0) FROM locations"),
        "malformed": one("SELECT COUNT(*) FROM dead_letters"),
        "late": one("SELECT COALESCE(SUM(calls), 0) FROM revisions"),  # late calls, counted all the same
        "late_calls_counted": one("SELECT COALESCE(SUM(calls), 0) FROM revisions"),
        "revised_windows": revised_windows(db, meta),
        "duplicates": one("SELECT COALESCE(SUM(duplicates), 0) FROM progress"),
        "top_crime_types": [{"crime_type": name, "count": n} for name, n in top_types],
        "top_locations": [{"address": a, "count": n} for a, n in db.execute(
            "SELECT address, count FROM locations ORDER BY count DESC, address LIMIT ?", (top,))],
        "dispositions": [{"code": c, "description": d, "count": n} for c, d, n in db.execute(
            "SELECT disposition, description, count FROM dispositions ORDER BY count DESC, disposition")],
        "malformed_reasons": dict(db.execute("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason")),
        "watermark": local_time(watermark) if watermark else None,
        "windows": {
            "length": meta.get("window"), "slide": meta.get("slide"),
            "count": len(windows),
            "final": sum(1 for _, end, _ in windows if watermark is not None and end <= watermark),
            "open": sum(1 for _, end, _ in windows if watermark is None or end > watermark),
            "latest": window(latest_window),
            "last_final": window(final_windows[-1] if final_windows else None),
            "recent": _recent_windows(by_window, windows[-recent:], watermark),
        },
        "calls_by_hour": {name: [0] * 24 for name in top_names} | _by_hour(db, top_names),
        "calls_by_day": _by_day(db, top_names),
        "calls_by_weekday_hour": _by_weekday_hour(db, int(meta.get("pane_seconds", 3600))),
        "batches": one("SELECT COUNT(*) FROM batches"),
        "data_loss": _data_loss(db),
        "event_time_range": _range(db),
        "pipeline": _pipeline(db, meta, job_pid, stall_after_s),
    }


def _data_loss(db) -> dict:
    """Messages Kafka deleted before the job read them (--accept-data-loss): the answers are short of them."""
    try:
        rows = db.execute("SELECT partition, from_offset, to_offset, messages FROM data_loss ORDER BY partition, "
                          "from_offset").fetchall()
    except sqlite3.OperationalError:  # results from before losses were recorded: none was
        rows = []
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


def _by_weekday_hour(db, pane_seconds: int) -> list[list[int]] | None:
    """Calls by day of week (Monday first) x hour of day, San Francisco time, summed from the window panes.

    Exact when a pane lies within one clock hour (slides that divide an hour); None for coarser panes.
    """
    if 3600 % pane_seconds:
        return None
    matrix = [[0] * 24 for _ in WEEKDAYS]
    for pane_start, count in db.execute("SELECT pane_start, SUM(count) FROM crime_type_panes GROUP BY pane_start"):
        moment = datetime.fromtimestamp(pane_start, timezone.utc).astimezone(SF_TZ)
        matrix[moment.weekday()][moment.hour] += count
    return matrix


def _pipeline(db, meta: dict, job_pid: int | None, stall_after_s: float) -> dict:
    """The job's health per micro-batch (newest last), and whether it is running now."""
    rows = db.execute(
        "SELECT p.batch_id, p.at, p.input_rows, p.input_rps, p.processed_rps, p.duration_ms, p.backlog, "
        "p.late_rows, b.malformed, b.written_at - b.kafka_ts_mean, b.written_at - b.kafka_ts_min "
        "FROM progress p LEFT JOIN batches b USING (batch_id) ORDER BY p.batch_id DESC LIMIT ?",
        (RECENT_BATCHES,)).fetchall()
    names = ("batch_id", "at", "input_rows", "input_rps", "processed_rps", "duration_ms", "backlog", "late",
             "malformed", "latency_mean_s", "latency_max_s")
    last_written, = db.execute("SELECT MAX(written_at) FROM batches").fetchone()
    clocks = read_clocks(db)
    held = holding_back(clocks)
    job = job_state(meta.get("spark_ui_url"), meta.get("spark_app_id"), job_pid)
    return {"job": job, "health": assess(meta, last_written, clocks, job, stall_after_s).summary(),
            "spark_ui_url": meta.get("spark_ui_url"), "spark_app_id": meta.get("spark_app_id"),
            "last_batch_written_at": last_written,  # epoch seconds
            "idle_timeout_s": float(meta["idle_timeout_seconds"]) if "idle_timeout_seconds" in meta else None,
            "watermark_held_by": held, "idle_partitions": sorted(p for p, c in clocks.items() if c.idle),
            "partitions": [{"partition": p, "event_time": None if c.event_time is None else local_time(c.event_time),
                            "read_to": c.read_to, "end_offset": c.end_offset, "unread": c.unread, "idle": c.idle,
                            "quiet_since": c.grew_at,  # epoch seconds: its end offset last grew, or first seen
                            "holds_watermark": p == held} for p, c in sorted(clocks.items())],
            "batches": [dict(zip(names, row)) for row in reversed(rows)]}


def revised_windows(db, meta: dict) -> int:
    """Windows that were final when a late call was counted into them."""
    window_s, pane_s = int(meta.get("window_seconds", 3600)), int(meta.get("pane_seconds", 3600))
    revised = set()
    for pane, watermark in db.execute("SELECT pane_start, watermark FROM revisions"):
        for j in range(max(1, window_s // pane_s)):
            start = pane - j * pane_s
            if start + window_s <= watermark:
                revised.add(start)
    return len(revised)


def _by_hour(db, names: list[str]) -> dict[str, list[int]]:
    result = {name: [0] * 24 for name in names}
    for hour, name, count in db.execute(
            f"SELECT hour, crime_type, count FROM hourly WHERE crime_type IN ({','.join('?' * len(names))})", names):
        result[name][hour] += count
    return result


def _by_day(db, names: list[str]) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {name: {} for name in names}
    for day, name, count in db.execute(
            f"SELECT day, crime_type, count FROM daily WHERE crime_type IN ({','.join('?' * len(names))}) "
            "ORDER BY day", names):
        result[name][day] = count
    return result


def _range(db) -> dict | None:
    meta = dict(db.execute("SELECT key, value FROM meta"))
    first, last = db.execute("SELECT MIN(pane_start), MAX(pane_start) FROM crime_type_panes").fetchone()
    if first is None:
        return None
    return {"from": local_time(first), "to": local_time(last + int(meta.get("pane_seconds", 3600)))}


# ------------------------------------------------------------------------------------------ terminal


def print_tables(result: dict, out=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out or sys.stdout, width=110)
    span = result["event_time_range"] or {}
    console.print(f"[bold]{result['total_calls']:,} calls[/bold] counted once each "
                  f"({span.get('from', '-')} to {span.get('to', '-')}, San Francisco time); "
                  f"{result['malformed']:,} malformed records kept aside; {result['duplicates']:,} duplicates "
                  f"dropped; {result['late_calls_counted']:,} late calls counted, revising "
                  f"{result['revised_windows']:,} final windows.")
    if loss_line(result):
        console.print(f"[bold red]{loss_line(result)}[/bold red]")
    windows = result["windows"]
    console.print(f"{windows['count']:,} windows of {windows['length']}: {windows['final']:,} final, "
                  f"{windows['open']:,} still open (watermark {result['watermark'] or '-'}).")

    def table(title, columns, rows):
        t = Table(title=title, title_justify="left") if title else Table()
        for name, justify in columns:
            t.add_column(name, justify=justify)
        for row in rows:
            t.add_row(*[f"{v:,}" if isinstance(v, int) else ("" if v is None else str(v)) for v in row])
        console.print(t)

    table("Top crime types", [("#", "right"), ("crime type", "left"), ("calls", "right"), ("code meaning", "left")],
          [(i + 1, r["crime_type"], r["count"], meaning(r["crime_type"])) for i, r in enumerate(result["top_crime_types"])])
    table("Crime density by location (top addresses)", [("#", "right"), ("address", "left"), ("calls", "right")],
          [(i + 1, r["address"], r["count"]) for i, r in enumerate(result["top_locations"])])
    table("Dispositions", [("code", "left"), ("description", "left"), ("calls", "right")],
          [(r["code"], r["description"] or "(no radio code)", r["count"]) for r in result["dispositions"]])
    shown = []
    for key, name in (("last_final", "Last final window"), ("latest", "Latest window")):
        window = windows.get(key)
        if not window or window["start"] in shown:
            continue
        shown.append(window["start"])
        state = "final" if window["final"] else "open: counts may still grow"
        # the heading on its own line: as a table title it wrapped to the table's narrow width
        console.print(f"[bold]{name}[/bold], {window['start']} to {window['end']} San Francisco time ({state})")
        table(None, [("crime type", "left"), ("calls", "right"), ("code meaning", "left")],
              [(r["crime_type"], r["count"], meaning(r["crime_type"])) for r in window["top_crime_types"]])


# -------------------------------------------------------------------------------------------- charts


def write_charts(result: dict, directory: Path) -> dict[str, Path]:
    """PNG charts with titles and labelled axes; returns {name: path}."""
    directory.mkdir(parents=True, exist_ok=True)
    return {name: save_figure(figure(), directory / f"{name}.png") for name, figure in chart_figures(result).items()}


def chart_figures(result: dict) -> dict[str, Callable[[], object]]:
    """Each chart the answers have data for, by name: a function that draws its figure."""
    types, places, dispositions = result["top_crime_types"], result["top_locations"], result["dispositions"]
    figures = {
        "top_crime_types": lambda: barh_figure(
            "Top crime types (SF police calls for service)",
            [labelled(r["crime_type"]) for r in types], [r["count"] for r in types], "calls", "crime type"),
        "top_locations": lambda: barh_figure(
            "Crime density by location: the busiest addresses",
            [r["address"] for r in places], [r["count"] for r in places], "calls", "address"),
        "dispositions": lambda: barh_figure(
            "Dispositions of calls (radio code and description)",
            [f"{r['code']} - {r['description'] or 'no radio code'}" for r in dispositions],
            [r["count"] for r in dispositions], "calls", "disposition"),
    }
    if result["calls_by_hour"]:
        figures["calls_by_hour"] = lambda: calls_by_hour_figure(result["calls_by_hour"])
    if result["windows"]["recent"]["windows"]:
        figures["calls_by_window"] = lambda: windows_figure(result["windows"])
    if result["calls_by_day"]:
        figures["calls_over_time"] = lambda: calls_over_time_figure(result["calls_by_day"])
    return figures


def save_figure(fig, path: Path) -> Path:
    """The PNG, its title in the file's metadata; the figure is closed."""
    plt = _pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Title": fig._suptitle.get_text() if fig._suptitle else path.stem})
    plt.close(fig)
    return path


def barh_figure(title: str, labels: list[str], values: list[int], xlabel: str, ylabel: str):
    """Horizontal bars, largest first, each with its count."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.32 * len(labels) + 1.2)))
    ax.barh(range(len(labels)), values, color="#3b6ea8")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_formatter(_thousands())
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,}", va="center", fontsize=7)
    fig.suptitle(title)
    return fig


def calls_over_time_figure(by_day: dict[str, dict[str, int]]):
    """Calls per day, a line per top crime type."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, days in by_day.items():
        xs = [datetime.strptime(d, "%Y-%m-%d") for d in days]
        ax.plot(xs, list(days.values()), label=labelled(name), linewidth=1.2)
    ax.set_xlabel("day (San Francisco time)")
    _label_time_series(fig, ax, "calls per day", "Calls over time for the top crime types")
    return fig


def _label_time_series(fig, ax, ylabel: str, title: str) -> None:
    """Counts over dates: thousands on the y axis, a legend, slanted dates, the title."""
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_formatter(_thousands())
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.suptitle(title)


def calls_by_hour_figure(by_hour: dict[str, list[int]]):
    """Calls by hour of day, one row per crime type, each row scaled to its own busiest hour: on one
    scale the busiest type set the colours and every other row was one flat colour."""
    import numpy as np

    plt = _pyplot()
    names = list(by_hour)
    counts = np.array([by_hour[n] for n in names], dtype=float)
    peaks = counts.max(axis=1, keepdims=True)
    shares = np.divide(counts, peaks, out=np.zeros_like(counts), where=peaks > 0)
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(names) + 2.2))
    image = ax.imshow(shares, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(24), [f"{h:02d}" for h in range(24)], fontsize=8)
    ax.set_yticks(range(len(names)), [f"{labelled(n)}\n(peak {int(p):,} calls)" for n, p in zip(names, peaks[:, 0])],
                  fontsize=7)
    ax.set_xlabel("hour of day (San Francisco time)")
    ax.set_ylabel("crime type")
    fig.colorbar(image, ax=ax, label="calls, as a share of the row's busiest hour")
    fig.suptitle("Calls by hour of day for the top crime types")
    return fig


def windows_figure(windows: dict):
    """The main answer over time: the top crime types' calls per event-time window, open windows marked."""
    plt = _pyplot()
    recent = windows["recent"]
    starts = [datetime.strptime(w["start"], "%Y-%m-%d %H:%M") for w in recent["windows"]]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for i, name in enumerate(recent["crime_types"]):
        ax.plot(starts, [w["counts"][i] for w in recent["windows"]], marker="o", markersize=3, linewidth=1.2,
                label=labelled(name))
    if len(starts) > 1:
        step = starts[1] - starts[0]
        opened = [start for start, w in zip(starts, recent["windows"]) if not w["final"]]
        for n, start in enumerate(opened):
            ax.axvspan(start, start + step, color="#f2c14e", alpha=0.3, label="open: counts may still grow" if n == 0 else None)
    ax.set_xlabel(f"window start (San Francisco time); the latest {len(starts)} windows of {windows['length']}"
                  + (f", sliding by {windows['slide']}" if windows.get("slide") not in (None, windows["length"]) else ""))
    _label_time_series(fig, ax, "calls in the window", "Top crime types per event-time window")
    return fig


def write_markdown(result: dict, charts: dict[str, Path], path: Path) -> Path:
    rel = {name: p.relative_to(path.parent).as_posix() for name, p in charts.items()}
    lines = ["# SF police calls for service: the answers", "",
             f"{result['total_calls']:,} calls counted once each; {result['malformed']:,} malformed records kept "
             f"in the dead letters; {result['duplicates']:,} duplicates dropped; {result['late_calls_counted']:,} "
             f"calls arrived after their window was final: counted, revising {result['revised_windows']:,} windows.",
             f"Windows: {result['windows']['count']:,} of {result['windows']['length']} "
             f"({result['windows']['final']:,} final, {result['windows']['open']:,} open; watermark "
             f"{result['watermark'] or '-'}).", ""]
    if loss_line(result):
        lines[2:2] = [f"**{loss_line(result)}**", ""]

    def section(title, chart, header, rows):
        lines.extend([f"## {title}", ""])
        if chart in rel:
            lines.extend([f"![{title}]({rel[chart]})", ""])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines.extend("| " + " | ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in row) + " |" for row in rows)
        lines.append("")

    section("Top crime types", "top_crime_types", ["crime type", "calls", "code meaning"],
            [(r["crime_type"], r["count"], meaning(r["crime_type"]) or "") for r in result["top_crime_types"]])
    recent = result["windows"]["recent"]
    section("Top crime types per event-time window", "calls_by_window",
            ["window start (San Francisco time)", "state", *recent["crime_types"]],
            [(w["start"], "final" if w["final"] else "open", *w["counts"]) for w in recent["windows"]])
    section("Crime density by location", "top_locations", ["address", "calls"],
            [(r["address"], r["count"]) for r in result["top_locations"]])
    section("Dispositions", "dispositions", ["code", "description", "calls"],
            [(r["code"], r["description"] or "(no radio code)", r["count"]) for r in result["dispositions"]])
    section("Calls by hour of day (San Francisco time; each chart row scaled to its own busiest hour)",
            "calls_by_hour", ["crime type"] + [f"{h:02d}" for h in range(24)],
            [(name, *hours) for name, hours in result["calls_by_hour"].items()])
    section("Calls over time", "calls_over_time", ["crime type", "days", "calls"],
            [(name, len(days), sum(days.values())) for name, days in result["calls_by_day"].items()])
    lines.extend(["Codes among the crime types: " + "; ".join(f"{code}: {text}" for code, text in MEANINGS.items())
                  + " (sources: sfcrime/glossary.py).", ""])
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_report(result: dict, output: str | Path) -> tuple[Path, dict[str, Path]]:
    """The Markdown page and its charts, in OUTPUT/report/: (the page, {chart name: path})."""
    directory = Path(output) / REPORT_DIR
    charts = write_charts(result, directory / CHART_DIR)
    return write_markdown(result, charts, directory / "report.md"), charts


def run(args) -> int:
    result = answers(args.output, args.top, args.windows)
    if args.json:
        json.dump(result, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    print_tables(result)
    if not args.no_charts:
        page, charts = write_report(result, args.output)
        print(f"report: {page} ({len(charts)} charts)")
    return 0

