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


def test_the_jvm_json_check_is_built_once_and_used_only_if_built_from_its_source(tmp_path, monkeypatch):
    monkeypatch.setattr(jars, "JARS_DIR", tmp_path / ".jars")
    javac = jars._javac
    monkeypatch.setattr(jars, "_javac", lambda: None)  # a machine with a JRE only
    assert jars.build_json_check().startswith("no javac here: the job checks each message's JSON in Python")
    assert jars.json_check_jar_paths() == []
    monkeypatch.setattr(jars, "_javac", javac)
    if javac() is None:
        pytest.skip("no javac on this machine")
    assert jars.build_json_check().startswith("built the JVM JSON check")
    assert jars.json_check_jar_paths() == [str(jars.json_check_jar())]
    assert jars.build_json_check().startswith("the JVM JSON check is built")  # a second set-up does nothing
    edited = tmp_path / "StrictJsonReason.java"
    edited.write_text(jars.JSON_CHECK_SOURCE.read_text() + "// edited after set-up\n")
    monkeypatch.setattr(jars, "JSON_CHECK_SOURCE", edited)
    assert jars.json_check_jar_paths() == []  # a jar of other source is not used: the Python check is
