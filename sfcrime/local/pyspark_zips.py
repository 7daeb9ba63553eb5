"""Compiled bytecode inside pyspark's own zips. Every Python process Spark starts (our source's reader in
the driver, the executors' workers, `spark-submit`'s driver) imports pyspark and py4j from
SPARK_HOME/python/lib/*.zip, ahead of site-packages, and Python never caches what it compiles from a zip:
each start compiled pyspark again, about 2 s of CPU here against 0.9 s with the bytecode beside the
source. Spark gives the reader 10 s to connect back, and on a busy machine a start took longer.

The bytecode is hash-checked: Python compares it with its source in the same zip on import and compiles
the source instead when they differ (or when the worker is another Python), so it costs time at worst,
never a different program. `make setup` adds it once; a second run finds it and does nothing. A pip
reinstall of pyspark brings the plain zips back, and `make setup` runs again after one.
"""

from __future__ import annotations

import importlib.util
import os
import time
import zipfile
from importlib._bootstrap_external import _code_to_hash_pyc  # what py_compile uses for hash-checked bytecode
from pathlib import Path

from .jars import spark_home


def zips() -> list[Path]:
    """pyspark.zip and py4j-*-src.zip: what Spark puts first on its Python processes' path."""
    return sorted((spark_home() / "python" / "lib").glob("*.zip"))


def has_bytecode(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith(".pyc") for name in archive.namelist())


def add_bytecode(path: Path) -> int:
    """Writes path again with a hash-checked .pyc beside each .py (zipimport's layout: `mod.pyc`, not
    __pycache__), atomically. The code's file names are the ones zipimport would give when compiling."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    compiled = 0
    try:
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED) as target:
            for entry in source.infolist():
                data = source.read(entry)
                target.writestr(entry, data)
                if not entry.filename.endswith(".py"):
                    continue
                code = compile(data, f"{path}{os.sep}{entry.filename}", "exec", dont_inherit=True)
                pyc = zipfile.ZipInfo(entry.filename + "c", entry.date_time)
                pyc.compress_type = zipfile.ZIP_DEFLATED
                target.writestr(pyc, bytes(_code_to_hash_pyc(code, importlib.util.source_hash(data), checked=True)))
                compiled += 1
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)
    return compiled


def make() -> str:
    """`make setup`: bytecode into pyspark's zips (some seconds, once)."""
    paths = zips()
    todo = [path for path in paths if not has_bytecode(path)]
    if not todo:
        return f"pyspark's zips hold compiled bytecode ({', '.join(p.name for p in paths)}; already done)"
    if not all(os.access(path.parent, os.W_OK) for path in todo):
        return (f"pyspark's zips in {todo[0].parent} are not writable: Spark's Python processes compile pyspark "
                "at each start (about 1 s of CPU more each)")
    started = time.monotonic()
    count = sum(add_bytecode(path) for path in todo)
    return (f"pyspark's zips hold compiled bytecode: {count} modules in {', '.join(p.name for p in todo)} "
            f"({time.monotonic() - started:.0f} s)")
