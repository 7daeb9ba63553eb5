"""java.py: a java's version is asked once per binary, and again when the binary changes."""

import os

from sfcrime.local import java


def fake_java(path, version: str, calls) -> None:
    path.write_text(f'#!/bin/sh\necho x >> "{calls}"\necho \'openjdk version "{version}" 2024-01-01\' >&2\n')
    path.chmod(0o755)


def test_a_javas_version_is_asked_once_and_again_after_it_changes(tmp_path):
    binary, calls = tmp_path / "java", tmp_path / "calls"
    fake_java(binary, "17.0.9", calls)
    assert java.java_version(str(binary)) == 17
    assert java.java_version(str(binary)) == 17
    os.symlink(binary, tmp_path / "linked")
    assert java.java_version(str(tmp_path / "linked")) == 17  # the same binary by another name
    assert calls.read_text().count("x") == 1
    fake_java(binary, "1.8.0_392", calls)  # replaced in place: another size
    assert java.java_version(str(binary)) == 8
    assert calls.read_text().count("x") == 2


def test_what_is_not_a_java_has_no_version_and_is_asked_again(tmp_path):
    binary, calls = tmp_path / "java", tmp_path / "calls"
    binary.write_text(f'#!/bin/sh\necho x >> "{calls}"\necho "no such thing" >&2\n')
    binary.chmod(0o755)
    assert java.java_version(str(binary)) is None
    assert java.java_version(str(binary)) is None
    assert calls.read_text().count("x") == 2
    assert java.java_version(str(tmp_path / "missing")) is None
