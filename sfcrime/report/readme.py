"""README's answers, made from a run's answers (`python -m sfcrime report --readme README.md`): numbers a
person reads are produced by a command, never typed."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError
from ..glossary import labelled
from .charts import chart_figures, save_figure

BEGIN, END = "<!-- answers: made by `python -m sfcrime report --readme README.md`; do not edit -->", "<!-- answers end -->"
ROWS = 10
CHARTS = ("top_crime_types", "top_locations")  # drawn beside the block, into docs/images/ next to README
_BLOCK = re.compile(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), re.S)


def answers_block(result: dict) -> str:
    """The answers as README shows them: totals, the top crime types beside the busiest addresses, windows."""
    span = result["event_time_range"] or {}
    types, places = result["top_crime_types"][:ROWS], result["top_locations"][:ROWS]
    lines = [f"Over {result['batches']:,} micro-batches the job counts **{result['total_calls']:,} calls**, each "
             f"crime_id once ({span.get('from', '-')} to {span.get('to', '-')}, San Francisco time); "
             f"{result['duplicates']:,} repeated messages were dropped and {result['malformed']:,} malformed "
             f"records kept aside. {result['windows']['count']:,} windows of {result['windows']['length']}: "
             f"{result['windows']['final']:,} final, {result['windows']['open']:,} still open.", "",
             "| top crime types | calls | | crime density by location | calls |", "|---|---:|---|---|---:|"]
    for i in range(max(len(types), len(places))):
        kind = types[i] if i < len(types) else None
        place = places[i] if i < len(places) else None
        left = (labelled(kind["crime_type"]), f"{kind['count']:,}") if kind else ("", "")
        right = (place["address"], f"{place['count']:,}") if place else ("", "")
        lines.append(f"| {left[0]} | {left[1]} | | {right[0]} | {right[1]} |")
    return "\n".join(lines)


def update_readme(path: Path, result: dict) -> None:
    """Replace the block between the markers with the answers of `result`, and draw README's two charts again."""
    text = path.read_text(encoding="utf-8")
    if not _BLOCK.search(text):
        raise UserError(f"{path} has no answers block ({BEGIN} ... {END})")
    path.write_text(_BLOCK.sub(lambda _: f"{BEGIN}\n{answers_block(result)}\n{END}", text), encoding="utf-8")
    images = path.parent / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    figures = chart_figures(result)
    for name in CHARTS:
        save_figure(figures[name](), images / f"{name}.png")


def readme_answers(path: Path) -> str:
    """The answers block README holds now."""
    match = _BLOCK.search(path.read_text(encoding="utf-8"))
    if match is None:
        raise UserError(f"{path} has no answers block")
    return match.group(1)
