"""Spark's errors, as one line a person can read."""

from __future__ import annotations

import subprocess


def first_line(error) -> str:
    """Spark's query errors carry the whole logical plan after the message: keep the message, and the
    first line of the root cause when there is one ("Exception thrown in awaitResult:" alone says nothing)."""
    java = getattr(error, "java_exception", None)  # py4j's own error: "An error occurred while calling o326.start."
    text = str(java.toString() if java is not None else error).strip()
    line = text.splitlines()[0].strip() if text else repr(error)
    root, seen = error, 0
    while getattr(root, "_cause", None) is not None and seen < 20:  # pyspark's captured cause chain
        root, seen = root._cause, seen + 1
    root_text = str(getattr(root, "_desc", "") or "").strip() if root is not error else ""
    root_line = root_text.splitlines()[0].strip() if root_text else ""
    if root_line and root_line not in line:
        line = f"{line.rstrip(': ')}: {root_line}"
    return line[:500]


def jvm_ended(spark, error: BaseException | None = None) -> str | None:
    """How the Spark JVM this process launched ended, once it has (killed from outside, by the kernel out of
    memory); None while it runs, or when spark-submit launched it (then this process goes with it). After
    `error`, a lost connection to it, it is given a moment: the socket closes before the process is reaped."""
    proc = getattr(getattr(getattr(spark, "sparkContext", None), "_gateway", None), "proc", None)
    if proc is None:
        return None
    try:
        code = proc.wait(timeout=2.0) if _lost_connection(error) else proc.poll()
    except subprocess.TimeoutExpired:
        return None
    if code is None:
        return None
    return f"Spark's JVM (pid {proc.pid}) " + (f"was killed by signal {-code}" if code < 0 else f"exited with status {code}")


def _lost_connection(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, ConnectionError) or type(error).__name__ == "Py4JNetworkError":
            return True
        error = error.__cause__ or error.__context__
    return False
