"""A local Spark session shared by the unit tests that need one."""

import pytest


@pytest.fixture(scope="session")
def spark():
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[2]").appName("sfcrime-unit")
               .config("spark.sql.session.timeZone", "America/Los_Angeles")
               .config("spark.sql.shuffle.partitions", "2").config("spark.ui.enabled", "false").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
