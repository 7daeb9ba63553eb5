"""When a Spark JVM we start may use the class-data archive, and what it is then given (class_archive.py)."""

import shlex

from sfcrime.local import class_archive


def _conf(tmp_path, monkeypatch, *files):
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in files:
        (conf / name).write_text("spark.driver.extraJavaOptions  -Dfrom.defaults=1\n" if name == "spark-defaults.conf" else "")
    archive = tmp_path / "spark.jsa"
    archive.write_bytes(b"archive")
    monkeypatch.setenv("SPARK_CONF_DIR", str(conf))
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    monkeypatch.delenv("SFCRIME_CLASS_ARCHIVE", raising=False)
    monkeypatch.setattr(class_archive, "archive_path", lambda: archive)
    monkeypatch.setattr(class_archive, "EMPTY_CONF", tmp_path / "empty")
    return conf, archive


def test_the_conf_folders_two_files_go_in_by_flags_and_its_place_on_the_class_path_is_an_empty_folder(tmp_path, monkeypatch):
    conf, archive = _conf(tmp_path, monkeypatch, "spark-defaults.conf", "log4j2.properties")
    launch = class_archive.launch()
    assert launch.env["SPARK_CONF_DIR"] == str(tmp_path / "empty") and not any((tmp_path / "empty").iterdir())
    assert shlex.split(launch.env["PYSPARK_SUBMIT_ARGS"]) == ["--properties-file", str(conf / "spark-defaults.conf"),
                                                              "pyspark-shell"]
    options = shlex.split(launch.java_options)
    assert f"-XX:SharedArchiveFile={archive}" in options
    assert f"-Dlog4j2.configurationFile={conf / 'log4j2.properties'}" in options
    assert launch.conf_java_options == "-Dfrom.defaults=1"  # Spark would drop it for ours: build_session joins them
    made = class_archive.launch(to_make=tmp_path / "new.jsa")
    assert f"-XX:ArchiveClassesAtExit={tmp_path / 'new.jsa'}" in shlex.split(made.java_options)


def test_spark_starts_as_usual_when_the_archive_could_change_what_runs(tmp_path, monkeypatch):
    conf, archive = _conf(tmp_path, monkeypatch, "spark-defaults.conf")
    assert class_archive.launch() is not None
    (conf / "hive-site.xml").write_text("<configuration/>")  # read from the class path: it must stay there
    assert class_archive.launch() is None
    (conf / "hive-site.xml").unlink()
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--jars x.jar pyspark-shell")  # the user's own launch
    assert class_archive.launch() is None
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    monkeypatch.setenv("SFCRIME_CLASS_ARCHIVE", "off")
    assert class_archive.launch() is None
    monkeypatch.delenv("SFCRIME_CLASS_ARCHIVE")
    archive.unlink()  # not made (no set-up yet, or its training failed)
    assert class_archive.launch() is None


def test_java_options_are_read_from_spark_defaults_as_java_properties(tmp_path):
    defaults = tmp_path / "spark-defaults.conf"
    defaults.write_text("# spark.driver.extraJavaOptions -Dcommented=1\nspark.jars a.jar\n"
                        "spark.driver.extraJavaOptions=-Dfirst=1\nspark.driver.extraJavaOptions   -Da=1 -Db=2  \n")
    assert class_archive.defaults_value(defaults, class_archive.JAVA_OPTIONS) == "-Da=1 -Db=2"  # the last one, as java.util.Properties
    assert class_archive.defaults_value(defaults, "spark.jars") == "a.jar"
    defaults.write_text("spark.driver.extraJavaOptions -Da=1 \\\n   -Db=2\n")  # a value continued on the next line
    assert class_archive.defaults_value(defaults, class_archive.JAVA_OPTIONS) == "-Da=1 -Db=2"
    defaults.write_text("spark.driver.extraJavaOptionsX -Dother=1\n")
    assert class_archive.defaults_value(defaults, class_archive.JAVA_OPTIONS) == ""
    assert class_archive.defaults_value(tmp_path / "missing.conf", "spark.jars") == ""


def test_kafkas_jvms_get_kafkas_archive_only_when_it_is_there_and_not_turned_off(tmp_path, monkeypatch):
    from sfcrime.local import kafka_archive
    from sfcrime.local.kafka import KafkaNode

    archive = tmp_path / "kafka.jsa"
    monkeypatch.setattr(kafka_archive, "archive_path", lambda: archive)
    monkeypatch.delenv("SFCRIME_CLASS_ARCHIVE", raising=False)
    monkeypatch.delenv("KAFKA_OPTS", raising=False)
    node = KafkaNode(tmp_path / "kafka", port=19999)
    node.data_dir.mkdir()
    assert not any("SharedArchiveFile" in option for option in node._java("kafka.Kafka"))  # none made yet
    archive.write_bytes(b"archive")
    command = node._java("kafka.tools.StorageTool")
    assert f"-XX:SharedArchiveFile={archive}" in command and "-Xlog:cds=off" in command
    assert command.index(f"-XX:SharedArchiveFile={archive}") < command.index("-cp")
    monkeypatch.setenv("SFCRIME_CLASS_ARCHIVE", "off")
    assert not any("SharedArchiveFile" in option for option in node._java("kafka.Kafka"))
    training = KafkaNode(tmp_path / "kafka", port=19999, archive_to=tmp_path / "new.jsa")
    assert f"-XX:ArchiveClassesAtExit={tmp_path / 'new.jsa'}" in training._java("kafka.Kafka")
    assert not any("Archive" in option for option in training._java("kafka.tools.StorageTool"))  # only the broker writes it


def test_kafkas_tool_scripts_read_sfcrime_class_archive_as_python_does(tmp_path):
    """The scripts in .venv/bin decide in sh; `off` in any case turns the archive off there too."""
    import subprocess

    from sfcrime.local.setup import tool_script

    archive = tmp_path / "kafka.jsa"
    script = tmp_path / "kafka-topics.sh"
    script.write_text(tool_script("kafka-topics.sh", "Main", "/bin/echo", "log4j", "jars/*", archive, "-Xlog:cds=off"))

    def command(setting: str | None) -> str:
        env = {"PATH": "/usr/bin:/bin"} | ({"SFCRIME_CLASS_ARCHIVE": setting} if setting is not None else {})
        return subprocess.run(["sh", str(script), "--list"], env=env, capture_output=True, text=True, check=True).stdout

    assert "SharedArchiveFile" not in command(None)  # no archive made
    archive.write_bytes(b"archive")
    assert f"-XX:SharedArchiveFile={archive} -Xlog:cds=off" in command(None)
    assert "SharedArchiveFile" in command("on")
    for off in ("off", "OFF", "Off"):
        assert "SharedArchiveFile" not in command(off), off
    assert command("off").split()[-4:] == ["Main", "--bootstrap-server", "localhost:9092", "--list"]
