"""Progress for long-running commands: a bar with rate and ETA on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("sfcrime.progress")


class Progress:
    """`with Progress("sending", total) as progress: progress.advance(n)`."""

    def __init__(self, label: str, total: int | None, unit: str = "msg", every_s: float = 5.0,
                 enabled: bool = True) -> None:
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.done = 0
        self.note = ""
        self._bar = None
        self._enabled = enabled
        self._started = self._last_log = time.monotonic()

    def __enter__(self) -> "Progress":
        self._started = self._last_log = time.monotonic()
        if self._enabled and sys.stderr.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                transient=False, refresh_per_second=5,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, rate="")
        return self

    def advance(self, n: int = 1, note: str | None = None) -> None:
        """`note` says where the work is (a replay's event time and time left), beside the rate."""
        self.done += n
        if note is not None:
            self.note = note
        now = time.monotonic()
        if self._bar is not None:
            if now - self._last_log >= 0.2:
                self._last_log = now
                self._bar.update(self._task, completed=self.done, rate=self._rate_text())
        elif self._enabled and now - self._last_log >= self.every_s:
            self._last_log = now
            self._log_line()

    def _rate_text(self) -> str:
        return f"{self.rate():,.0f} {self.unit}/s" + (f", {self.note}" if self.note else "")

    def rate(self) -> float:
        elapsed = time.monotonic() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def _log_line(self) -> None:
        if self.total:
            rate = self.rate()
            eta = (self.total - self.done) / rate if rate else float("inf")
            log.info("%s: %s/%s %s (%.0f%%), %s/s, ETA %.0fs%s", self.label, f"{self.done:,}",
                     f"{self.total:,}", self.unit, 100 * self.done / self.total, f"{rate:,.0f} {self.unit}",
                     eta, f", {self.note}" if self.note else "")
        else:
            log.info("%s: %s %s, %s %s/s", self.label, f"{self.done:,}", self.unit, f"{self.rate():,.0f}", self.unit)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=self._rate_text())
            self._bar.stop()
