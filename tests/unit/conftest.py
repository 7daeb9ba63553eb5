"""A local Spark session shared by the unit tests that need one."""

import pytest


@pytest.fixture(scope="session")
def spark():
    from sfcrime.stream.session import build_session

    session = build_session("sfcrime-unit", master="local[2]",
                            defaults={"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"})
    yield session
    session.stop()
