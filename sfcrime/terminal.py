"""What a command prints besides its answers: log lines, and a stdout that went away."""

from __future__ import annotations

import logging
import os
import sys


def discard_stdout() -> None:
    """`... | head` stopped reading, a normal way to stop: what is still buffered for stdout can never be
    written, so stdout goes to /dev/null and the interpreter's last flush does not fail on it."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr, unless the application already configured logging."""
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not verbose:
        for handler in root.handlers:
            handler.addFilter(_py4j_chatter)
    for noisy in ("kafka", "py4j", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
    logging.getLogger("sfcrime.librdkafka").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def _py4j_chatter(record: logging.LogRecord) -> bool:
    """py4j logs each command a JVM gone (killed from outside) could not answer, with its traceback, on the root
    logger (at INFO, or ERROR inside a batch): pages under the job's one line, which says what happened. -v
    keeps them."""
    return f"{os.sep}py4j{os.sep}" not in record.pathname
