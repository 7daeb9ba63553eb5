"""Set-up without mvn: Apache Ivy from pyspark's own jars fetches Spark's connector from the same default
repository, and keeps only what Spark doesn't ship. (With mvn, every `make setup` exercises that path.)"""

import shutil

import pytest

from sfcrime.local import jars

pytestmark = pytest.mark.slow


def test_without_mvn_ivy_fetches_the_connector_and_leaves_out_what_spark_ships(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(jars, "JARS_DIR", tmp_path / ".jars")
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "mvn" else which(name, *a, **k))
    connector = jars.connector_jars()
    assert jars.install(connector, "the connector")
    assert "with Ivy (from pyspark's jars)" in capsys.readouterr().out
    assert sorted(jars._artifact(j.name) for j in connector.jars()) == [
        "commons-pool2", "kafka-clients", "spark-sql-kafka-0-10_2.13", "spark-token-provider-kafka-0-10_2.13"]
    assert connector.installed() and not jars.install(connector, "the connector")  # a second set-up does nothing
