"""The Java side of the reference stack, fetched once at pinned versions into `.jars/` (ignored by git).

- Apache Kafka (`kafka_2.13`, `kafka-tools`) with a log4j2 binding, which the Maven artifacts lack
  (only Kafka's tarball ships one): the local broker and Kafka's own console tools run from these.
- Spark's Kafka connector (`spark-sql-kafka-0-10_2.13`) at exactly the installed Spark's version, with the
  dependencies Spark itself does not ship (kafka-clients, the token provider, commons-pool2).
- Our strict JSON check for the executors' JVM (`sfcrime/stream/jvm/`), compiled against pyspark's jars when
  the machine has `javac`; without it the job checks JSON in Python workers, the same answers, slower.

`mvn` is used when the machine has it: it honours the machine's own Maven settings and mirrors, and fills
`~/.m2/repository`, where `spark-submit --packages` looks first, so the course's original command then
works offline. Otherwise Apache Ivy, which pyspark ships in its jars, resolves from the same default
repository. A second set-up finds the stamp and does nothing.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from ..config import REPO_DIR
from ..errors import UserError
from .java import java_executable

JARS_DIR = REPO_DIR / ".jars"
KAFKA_VERSION = "4.4.0"  # Apache Kafka 4.4: KRaft only, `StorageTool format --standalone`
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.17"  # Kafka's pom asks for slf4j 1.7, which the log4j2 binding (slf4j2-impl) can't serve
CONNECTOR = "org.apache.spark:spark-sql-kafka-0-10_2.13"
STAMP = "COORDINATES"
# artifact-version.jar, the version dotted ("4.2.0", "1.5.7-7", "3.30.2-GA"); an artifact may hold digits
# and dashes itself ("spark-sql-kafka-0-10_2.13", "log4j-1.2-api")
_JAR_NAME = re.compile(r"^(?P<artifact>.+)-(?P<version>\d+(?:\.\d+)+(?:-\d+)?(?:[.-][A-Za-z][\w.]*)?)\.jar$")


@dataclass(frozen=True)
class JarSet:
    """Maven coordinates (group:artifact:version) resolved with their dependencies into one folder."""

    name: str
    coordinates: tuple[str, ...]
    without: frozenset[str] = frozenset()  # artifacts to leave out (Spark's own, for the connector)

    @property
    def folder(self) -> Path:
        return JARS_DIR / self.name

    def jars(self) -> list[Path]:
        return sorted(self.folder.glob("*.jar"))

    def installed(self) -> bool:
        stamp = self.folder / STAMP
        return stamp.exists() and stamp.read_text().split() == list(self.coordinates) and bool(self.jars())


def spark_version() -> str:
    import pyspark

    return pyspark.__version__


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def kafka_jars() -> JarSet:
    return JarSet(f"kafka-{KAFKA_VERSION}", (
        f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
        f"org.apache.kafka:kafka-tools:{KAFKA_VERSION}",
        f"org.apache.logging.log4j:log4j-core:{LOG4J_VERSION}",
        f"org.apache.logging.log4j:log4j-slf4j2-impl:{LOG4J_VERSION}",
        f"org.slf4j:slf4j-api:{SLF4J_VERSION}",
    ))


def connector_jars() -> JarSet:
    """The connector for exactly the installed Spark; what Spark's own jars hold is left out, so one copy
    of each class is on the classpath (as `--packages` would be if Spark's jars were newer)."""
    version = spark_version()
    spark_own = frozenset(_artifact(p.name) for p in (spark_home() / "jars").glob("*.jar"))
    return JarSet(f"spark-sql-kafka-{version}", (f"{CONNECTOR}:{version}",), spark_own)


def connector_coordinate() -> str:
    return f"{CONNECTOR}:{spark_version()}"


JSON_CHECK_SOURCE = REPO_DIR / "sfcrime" / "stream" / "jvm" / "sfcrime" / "StrictJsonReason.java"
JSON_CHECK_CLASS = "sfcrime.StrictJsonReason"


def json_check_jar() -> Path:
    return JARS_DIR / "sfcrime-jvm" / f"sfcrime-jvm-spark-{spark_version()}.jar"


def _json_check_digest() -> str:
    return hashlib.sha256(JSON_CHECK_SOURCE.read_bytes() + spark_version().encode()).hexdigest()


def json_check_jar_paths() -> list[str]:
    """The JVM JSON check's jar when it is built from the current source for this Spark, else none."""
    jar = json_check_jar()
    stamp = jar.with_suffix(".sha256")
    if jar.exists() and stamp.exists() and stamp.read_text().strip() == _json_check_digest():
        return [str(jar)]
    return []


def _javac() -> str | None:
    beside_java = Path(java_executable()).parent / "javac"
    return str(beside_java) if beside_java.exists() else shutil.which("javac")


def build_json_check() -> str:
    """Compile the strict JSON check into a jar unless it is built already; says what it did, in one line."""
    if json_check_jar_paths():
        return f"the JVM JSON check is built ({_shown(json_check_jar())})"
    javac = _javac()
    if javac is None:
        return "no javac here: the job checks each message's JSON in Python workers (the same answers, slower)"
    jar = json_check_jar()
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".javac-", dir=jar.parent) as tmp:
        classes = Path(tmp) / "classes"
        _run([javac, "--release", "17", "-nowarn", "-cp", str(spark_home() / "jars" / "*"), "-d", str(classes),
              str(JSON_CHECK_SOURCE)], "javac")
        staged = Path(tmp) / jar.name
        with zipfile.ZipFile(staged, "w") as zf:
            for path in sorted(classes.rglob("*.class")):
                zf.write(path, path.relative_to(classes).as_posix())
        staged.replace(jar)
    jar.with_suffix(".sha256").write_text(_json_check_digest() + "\n")
    return f"built the JVM JSON check ({_shown(jar)})"


def _shown(path: Path) -> Path:
    return path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path


def _artifact(file_name: str) -> str:
    match = _JAR_NAME.match(file_name)
    return match.group("artifact") if match else file_name


# ------------------------------------------------------------------------------------------- fetching


def install(jar_set: JarSet, label: str) -> bool:
    """Fetch a jar set unless it is already there; True if anything was fetched."""
    if jar_set.installed():
        return False
    tool = "mvn" if shutil.which("mvn") else "Ivy (from pyspark's jars)"
    print(f"fetching {label} with {tool}: {', '.join(jar_set.coordinates)}", flush=True)
    started = time.monotonic()
    JARS_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=JARS_DIR) as tmp:
        staging = Path(tmp) / "jars"
        staging.mkdir()
        if shutil.which("mvn"):
            _fetch_with_maven(jar_set.coordinates, Path(tmp), staging)
        else:
            _fetch_with_ivy(jar_set.coordinates, Path(tmp), staging)
        for jar in staging.glob("*.jar"):
            if _artifact(jar.name) in jar_set.without:
                jar.unlink()
        (staging / STAMP).write_text("\n".join(jar_set.coordinates) + "\n")
        if jar_set.folder.exists():
            shutil.rmtree(jar_set.folder)
        staging.rename(jar_set.folder)
    jars = jar_set.jars()
    size = sum(j.stat().st_size for j in jars) / 1e6
    print(f"  {len(jars)} jars, {size:.0f} MB, in {_shown(jar_set.folder)} "
          f"({time.monotonic() - started:.0f} s)", flush=True)
    return True


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line or "unresolved" in line.lower()] or lines
        raise UserError(f"{what} failed: " + " | ".join(errors[:3])[:600])


def _fetch_with_maven(coordinates: tuple[str, ...], workdir: Path, staging: Path) -> None:
    dependencies = "\n".join(
        "    <dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>".format(
            *c.split(":")) for c in coordinates)
    (workdir / "pom.xml").write_text(f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.sfcrime</groupId><artifactId>jars</artifactId><version>1</version><packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
""")
    _run(["mvn", "-B", "-q", "-f", str(workdir / "pom.xml"), "dependency:copy-dependencies",
          f"-DoutputDirectory={staging}", "-DincludeScope=runtime"], "mvn")


def _fetch_with_ivy(coordinates: tuple[str, ...], workdir: Path, staging: Path) -> None:
    ivy_jars = sorted((spark_home() / "jars").glob("ivy-*.jar"))
    if not ivy_jars:
        raise UserError("neither mvn nor pyspark's Ivy jar is available to fetch the jars (run `make setup`)")
    dependencies = "\n".join(
        "    <dependency org={} name={} rev={} conf=\"default->default\"/>".format(*map(quoteattr, c.split(":")))
        for c in coordinates)
    (workdir / "ivy.xml").write_text(f"""<ivy-module version="2.0">
  <info organisation="local.sfcrime" module="jars"/>
  <configurations><conf name="default"/></configurations>
  <dependencies>
{dependencies}
  </dependencies>
</ivy-module>
""")
    _run([java_executable(), "-jar", str(ivy_jars[-1]), "-warn", "-ivy", str(workdir / "ivy.xml"), "-confs", "default",
          "-retrieve", f"{staging}/[artifact]-[revision](-[classifier]).[ext]", "-types", "jar", "bundle"], "Ivy")


# ------------------------------------------------------------------------------------------- Spark's conf


def stderr_log4j2(comment: str, level: str, pattern: str, loggers: dict[str, str] | None = None) -> str:
    """A log4j2.properties logging to stderr at `level`, with per-logger levels: for Spark and Kafka's tools."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"rootLogger.level = {level}", "rootLogger.appenderRef.stderr.ref = stderr",
              "appender.stderr.type = Console", "appender.stderr.name = stderr", "appender.stderr.target = SYSTEM_ERR",
              "appender.stderr.layout.type = PatternLayout", f"appender.stderr.layout.pattern = {pattern}"]
    for i, (name, logger_level) in enumerate((loggers or {}).items()):
        lines += [f"logger.l{i}.name = {name}", f"logger.l{i}.level = {logger_level}"]
    return "\n".join(lines) + "\n"


SPARK_LOG4J2 = stderr_log4j2(
    "Written by `make setup`: spark-submit and the job print their own progress; Spark's INFO lines would bury it.\n"
    "Raise the level here, or with SFCRIME_SPARK_LOG_LEVEL=INFO for the job, to see them.\n"
    "error, as Spark's own loggers below: when the root level differs, pyspark prints \"Setting default log level\".",
    "error", "%d{HH:mm:ss} %p %c{1}: %m%n%ex{3}",
    {"org.apache.kafka": "error", "org.apache.spark": "error", "org.apache.hadoop": "error",
     "org.sparkproject.jetty": "error"})


def install_spark_conf(connector: JarSet, extra_jars: list[str] | None = None) -> Path | None:
    """Put the connector on every Spark our venv starts (`spark-submit data_stream.py` included) through
    Spark's own defaults file, and quiet Spark's console logging. Only a pyspark inside this repo's .venv
    is touched; anywhere else, README's `--jars` / `--packages` command does the same."""
    home = spark_home()
    if REPO_DIR / ".venv" not in home.parents:
        return None
    conf = home / "conf"
    conf.mkdir(exist_ok=True)
    defaults = conf / "spark-defaults.conf"
    jars = ",".join([str(j) for j in connector.jars()] + list(extra_jars or []))
    text = ("# Written by `make setup` (sfcrime/local/jars.py): Spark's Kafka connector and our JVM JSON check\n"
            "# for every job of this venv.\n"
            f"spark.jars {jars}\n")
    if not defaults.exists() or defaults.read_text() != text:
        defaults.write_text(text)
    (conf / "log4j2.properties").write_text(SPARK_LOG4J2)
    return defaults


def connector_jar_paths() -> list[str]:
    """The connector's jars when set-up fetched them (for a job started outside spark-submit)."""
    jar_set = connector_jars()
    return [str(j) for j in jar_set.jars()] if jar_set.installed() else []


def kafka_classpath() -> str:
    jar_set = kafka_jars()
    if not jar_set.installed():
        raise UserError(f"Apache Kafka {KAFKA_VERSION} is not set up (run `make setup`)")
    return str(jar_set.folder / "*")

