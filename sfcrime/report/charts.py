"""The answers as PNG charts (matplotlib, without a display: the report runs in terminals, tests and CI)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable

from ..glossary import labelled


def _pyplot():
    """matplotlib's pyplot without a display (the report runs in terminals, tests and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:,.0f}")

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
