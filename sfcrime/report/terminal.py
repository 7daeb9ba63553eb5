"""The answers as tables on a terminal (rich)."""

from __future__ import annotations

import sys

from ..answers import loss_line
from ..glossary import meaning


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
