"""The live dashboard: one page, drawn in the browser from one JSON endpoint, served from the job's results.

The endpoint is `answers.answers()`, so the page, `python -m sfcrime report --json` and any program agree.
It reads the results read-only, so it works while the job writes and after it stopped. Standard library
only (http.server); the page's one dependency, Chart.js, is vendored under static/ (no CDN).
"""

__all__ = ["DEFAULT_PORT", "DashboardOptions", "make_server", "run", "start_in_background"]


def __getattr__(name: str):
    """The server's names, imported when first asked for: answers.py imports health.py from here, and the
    server imports answers.py."""
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
