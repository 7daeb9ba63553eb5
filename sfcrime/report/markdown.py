"""The answers as a Markdown page beside its charts."""

from __future__ import annotations

from pathlib import Path

from ..answers import loss_line
from ..glossary import MEANINGS, meaning


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
