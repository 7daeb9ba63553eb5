"""Spark's errors, as one line a person can read."""

from __future__ import annotations


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
