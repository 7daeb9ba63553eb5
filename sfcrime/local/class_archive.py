"""A class-data archive (the JDK's CDS) for the Spark JVMs this project starts with python: they map
Spark's classes, already parsed and verified, instead of loading them again from some 250 jars each time.
`make setup` makes it from a short run of the job's own work (local/training.py);
session.build_session starts the JVM on it. It saves about 5 s of every Spark start on 2 cores (README,
"Set-up"; `bench startup`).

The JVM checks the archive itself (its own build, the class path, each jar's size and time) and ignores
one that no longer matches, silently: a stale archive costs time, never a wrong answer. CDS takes only jars
and empty folders on the class path, and Spark puts its conf folder there. So the JVM gets an empty
SPARK_CONF_DIR, and the conf folder's two files go in by other means: spark-defaults.conf as
--properties-file, log4j2.properties as log4j2.configurationFile. A conf folder holding anything else
(hive-site.xml, spark-env.sh, ...) is left alone and the archive unused. `spark-submit` starts its own JVM
and never uses it. SFCRIME_CLASS_ARCHIVE=off starts Spark as usual.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..kafka_settings import properties_lines
from .jars import JARS_DIR, spark_home, spark_version
from .java import ensure_java, java_executable, java_in_use

ARCHIVE_DIR = JARS_DIR / "class-archive"
EMPTY_CONF = ARCHIVE_DIR / "empty-spark-conf"
CONF_FILES = {"spark-defaults.conf", "log4j2.properties"}  # what a conf folder may hold for the archive to be used
JAVA_OPTIONS = "spark.driver.extraJavaOptions"
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"  # a stale archive is dropped without a warning on stdout


def archive_path() -> Path:
    """The archive for this pyspark and this java (after ensure_java): another of either needs its own."""
    key = archive_key(java_in_use() or java_executable(), str(spark_home()))  # cheap: no `java -version` per session
    return ARCHIVE_DIR / f"spark-{spark_version()}-{key}.jsa"


def archive_key(java: str, *made_of: str) -> str:
    """A short key for an archive's name: this java's build (its path, size and time) and what else the
    archive holds classes of."""
    resolved = Path(java).resolve()
    stat = resolved.stat()
    return hashlib.sha256("|".join([*made_of, str(resolved), str(stat.st_size), str(stat.st_mtime_ns)])
                          .encode()).hexdigest()[:12]


def enabled() -> bool:
    """SFCRIME_CLASS_ARCHIVE=off starts every JVM as usual."""
    return os.environ.get("SFCRIME_CLASS_ARCHIVE", "").lower() != "off"


def conf_folder() -> Path:
    return Path(os.environ.get("SPARK_CONF_DIR") or spark_home() / "conf")


def defaults_value(defaults: Path, key: str) -> str:
    """A setting of a spark-defaults.conf (Java properties: the last line of a key wins), or ""."""
    try:
        text = defaults.read_text(encoding="utf-8")
    except OSError:
        return ""
    value = ""
    for line in properties_lines(text):
        match = re.match(r"([^\s=:]+)\s*(?:[=:]\s*|\s)(.*)$", line)  # key=value, key: value or key value
        if match and match.group(1) == key:
            value = match.group(2).strip()
    return value


@dataclass
class Launch:
    """How to start Spark's JVM on the archive: options for it, and the environment for spark-submit."""
    java_options: str  # ours, after the conf folder's own (`conf_java_options`) or the user's
    conf_java_options: str
    env: dict[str, str]


def launch(to_make: Path | None = None) -> Launch | None:
    """The JVM's launch on the archive (or one that writes an archive to `to_make` when it exits); None to
    start Spark as usual."""
    if not enabled() or "PYSPARK_SUBMIT_ARGS" in os.environ:
        return None
    archive = None if to_make else archive_path()
    if archive is not None and not archive.is_file():
        return None
    conf = conf_folder()
    held = {p.name for p in conf.iterdir()} if conf.is_dir() else set()
    if held - CONF_FILES:
        return None
    EMPTY_CONF.mkdir(parents=True, exist_ok=True)
    options = [f"-XX:ArchiveClassesAtExit={shlex.quote(str(to_make))}" if to_make
               else f"-XX:SharedArchiveFile={shlex.quote(str(archive))} {QUIET}"]
    if "log4j2.properties" in held:
        options.append(f"-Dlog4j2.configurationFile={shlex.quote(str(conf / 'log4j2.properties'))}")
    submit = ["pyspark-shell"]
    if "spark-defaults.conf" in held:
        submit = ["--properties-file", str(conf / "spark-defaults.conf")] + submit
    return Launch(" ".join(options), defaults_value(conf / "spark-defaults.conf", JAVA_OPTIONS),
                  {"SPARK_CONF_DIR": str(EMPTY_CONF), "PYSPARK_SUBMIT_ARGS": shlex.join(submit)})


def make(path: Path | None = None) -> str:
    """`make setup`: the archive, made by a training run in a JVM of its own (a minute, once); a second
    run finds it and does nothing."""
    ensure_java()  # the java build_session will start, so the archive's name is the one it looks for
    return make_once(path or archive_path(), "Spark's JVM", "a short run of the job (about a minute, once)",
                     _training_run, "Spark starts as usual, about 5 s slower")


def _training_run(staging: Path) -> str | None:
    """The job's own work in a JVM that writes the archive to `staging` as it exits; why it failed, or None."""
    log = ARCHIVE_DIR / "training.log"
    with open(log, "wb") as out:
        try:
            failed = subprocess.run([sys.executable, "-m", "sfcrime.local.training", str(staging)],
                                    stdout=out, stderr=subprocess.STDOUT, timeout=900).returncode != 0
        except subprocess.TimeoutExpired:
            failed = True
    return f"the training run failed, see {log}" if failed or not staging.is_file() else None


def make_once(path: Path, label: str, source: str, train: Callable[[Path], str | None], without: str) -> str:
    """The archive at `path` (ARCHIVE_DIR/<kind>-<version>-<key>.jsa), unless it is there: `train` writes it
    to a staging file and returns why it could not, or None. Set-up goes on without one (`without` says
    what that costs); a new one replaces the archives of the same kind that no JVM here can use any more."""
    if path.is_file():
        return f"class-data archive of {label}: {path.relative_to(JARS_DIR.parent)} (already made)"
    print(f"making a class-data archive of {label} from {source} ...", flush=True)
    started = time.monotonic()
    kind = path.name.split("-", 1)[0]
    ARCHIVE_DIR.mkdir(parents=True, exist_ok=True)
    for leftover in ARCHIVE_DIR.glob(f".{kind}-*.jsa.*"):  # an interrupted training run's
        leftover.unlink(missing_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    failure = train(staging)
    if failure or not staging.is_file():
        staging.unlink(missing_ok=True)
        return f"no class-data archive of {label} ({failure or 'the training run wrote none'}): {without}"
    staging.replace(path)
    for old in ARCHIVE_DIR.glob(f"{kind}-*.jsa"):  # another version's or java's
        if old != path:
            old.unlink()
    return (f"class-data archive of {label}: {path.relative_to(JARS_DIR.parent)} "
            f"({path.stat().st_size / 1e6:.0f} MB, {time.monotonic() - started:.0f} s)")
