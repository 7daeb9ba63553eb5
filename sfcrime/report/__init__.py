"""`python -m sfcrime report`: the answers (answers.py) on the terminal, as JSON, or as a Markdown page with
charts in the job's output folder."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ..answers import RECENT_WINDOWS, answers
from ..results import ResultsPlace
from .charts import write_charts
from .markdown import write_markdown
from .terminal import print_tables

REPORT_DIR = "report"  # in the job's output folder
CHART_DIR = "charts"

__all__ = ["ReportOptions", "print_tables", "run", "write_report"]


@dataclass(frozen=True)
class ReportOptions:
    output: Path = Path("out")  # the job's output folder: the SQLite results, and where the page goes
    results_url: str | None = None  # a PostgreSQL results store instead of the SQLite one
    results_config_file: str | None = None
    as_json: bool = False
    top: int = 20
    windows: int = RECENT_WINDOWS
    charts: bool = True
    readme: Path | None = None  # write the answers into this README's answers block

    @property
    def place(self) -> ResultsPlace:
        return ResultsPlace(self.output, self.results_url, self.results_config_file)


def write_report(result: dict, output: str | Path) -> tuple[Path, dict[str, Path]]:
    """The Markdown page and its charts, in OUTPUT/report/: (the page, {chart name: path})."""
    directory = Path(output) / REPORT_DIR
    charts = write_charts(result, directory / CHART_DIR)
    return write_markdown(result, charts, directory / "report.md"), charts


def run(options: ReportOptions) -> int:
    result = answers(options.place, options.top, options.windows)
    if options.readme is not None:
        from .readme import update_readme

        update_readme(options.readme, result)
        print(f"answers written into {options.readme}")
        return 0
    if options.as_json:
        json.dump(result, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    print_tables(result)
    if options.charts:
        page, charts = write_report(result, options.output)
        print(f"report: {page} ({len(charts)} charts)")
    return 0
