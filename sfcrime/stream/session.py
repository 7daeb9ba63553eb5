"""The one way this project starts Spark: the streaming job, the batch baseline and the unit tests.

Under spark-submit the JVM is already up and holds what its command line and the defaults file set
(--master, --jars, --packages): those win over our defaults. Run by python, we start the JVM ourselves.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from ..sf_time import ZONE_NAME
from ..local import class_archive
from ..local.java import ensure_java


def build_session(app_name: str, master: str | None = None, defaults: dict[str, str] | None = None,
                  conf: dict[str, str] | None = None, timezone: str = ZONE_NAME,
                  jars: list[str] | None = None, make_class_archive: Path | None = None) -> SparkSession:
    """A Spark session in `timezone` (call_date_time is San Francisco local time, with no offset).

    `master` defaults to spark-submit's, else local[*]; `defaults` give way to what spark-submit set;
    `conf` (the user's --spark-conf) wins over both; `jars` go on the classpath only when we start the JVM,
    and so does the class-data archive (class_archive.py; `make_class_archive` writes one there instead).
    """
    ensure_java()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    under_spark_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if under_spark_submit:
        SparkContext._ensure_initialized()
        _jvm_ignores_ctrl_c(SparkContext._jvm)
    submitted = SparkConf()
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    elif not submitted.contains("spark.master"):
        builder = builder.master("local[*]")
    if jars and not under_spark_submit:
        builder = builder.config("spark.jars", ",".join(jars))
    for key, value in (defaults or {}).items():
        if not submitted.contains(key):
            builder = builder.config(key, value)
    builder = builder.config("spark.sql.session.timeZone", timezone)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    launch = None if under_spark_submit or SparkContext._active_spark_context else class_archive.launch(make_class_archive)
    if launch is None:
        spark = builder.getOrCreate()
    else:
        own = ((conf or {}).get(class_archive.JAVA_OPTIONS) or launch.conf_java_options
               or (defaults or {}).get(class_archive.JAVA_OPTIONS))  # Spark's order: the first of these wins
        options = f"{own} {launch.java_options}" if own else launch.java_options
        saved = {name: os.environ.get(name) for name in launch.env}
        os.environ.update(launch.env)  # read by pyspark as it starts the JVM, then put back
        try:
            spark = builder.config(class_archive.JAVA_OPTIONS, options).getOrCreate()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    _quiet(spark)
    _accumulator_server_quiet_at_stop(spark.sparkContext)
    return spark


def _accumulator_server_quiet_at_stop(context: SparkContext) -> None:
    """pyspark's SparkContext.stop() stops the JVM side first, then its own accumulator server: a handler
    polling the JVM's connection just then reads end-of-file and printed a 20-line traceback under the
    job's resume line (1 of 24 Ctrl-Cs of a live job here). That end-of-file is the JVM leaving."""
    server = getattr(context, "_accumulatorServer", None)
    if server is None:
        return
    report = server.handle_error

    def handle_error(request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (EOFError, ConnectionError)):
            report(request, client_address)

    server.handle_error = handle_error


def _jvm_ignores_ctrl_c(jvm) -> None:
    """Under spark-submit the JVM is our parent, in the terminal's foreground process group: Ctrl-C reached
    it too, and it exited at once, closing py4j and the pipe it relays our output through, so the job's
    "stopping (Ctrl-C) ... resume with" line never came. Python alone answers Ctrl-C, as when pyspark starts
    the JVM itself (with SIGINT ignored); spark-submit then exits with our exit code, 130."""
    try:
        signal_class = jvm.sun.misc.Signal
        signal_class.handle(signal_class("INT"), jvm.sun.misc.SignalHandler.SIG_IGN)
    except Exception as error:  # noqa: BLE001 - a JVM without sun.misc: Ctrl-C ends it as before
        logging.getLogger(__name__).debug("could not make spark-submit's JVM ignore Ctrl-C: %s", error)


def _quiet(spark: SparkSession) -> None:
    """Spark's log at ERROR, unless SFCRIME_SPARK_LOG_LEVEL says otherwise.

    A failed query is reported in one line by the job; Spark would also log it with the Python and Java
    stack traces. SFCRIME_SPARK_LOG_LEVEL=WARN (or ERROR) brings them back.
    """
    level = os.environ.get("SFCRIME_SPARK_LOG_LEVEL")
    spark.sparkContext.setLogLevel(level or "ERROR")
    if not level:
        jvm = spark.sparkContext._jvm
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            "org.apache.spark.sql.execution.streaming", jvm.org.apache.logging.log4j.Level.OFF)
        logging.getLogger("py4j.clientserver").setLevel(logging.CRITICAL)  # the foreachBatch error, again
