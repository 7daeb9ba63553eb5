"""Bytecode in pyspark's zips (local/pyspark_zips.py): Python imports it from the zip, and never in place of
a source that changed since."""

import subprocess
import sys
import zipfile

from sfcrime.local import pyspark_zips


def _import(zip_path, module):
    """`module`'s file and VALUE, imported in a fresh Python with only zip_path ahead of the standard path,
    as Spark's workers import pyspark."""
    code = f"import {module} as m; print(m.__file__); print(m.VALUE)"
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(zip_path)}, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    return out[0], out[1]


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), text)


def test_a_zip_gets_bytecode_that_python_imports_and_a_changed_source_wins_over_it(tmp_path):
    path = tmp_path / "lib.zip"
    _zip(path, {"pkg/__init__.py": "", "pkg/mod.py": "VALUE = 1\n", "pkg/data.json": "{}"})
    assert not pyspark_zips.has_bytecode(path)
    assert pyspark_zips.add_bytecode(path) == 2
    assert pyspark_zips.has_bytecode(path)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["pkg/__init__.py", "pkg/__init__.pyc", "pkg/data.json", "pkg/mod.py",
                                              "pkg/mod.pyc"]
    assert _import(path, "pkg.mod") == (f"{path}/pkg/mod.pyc", "1")

    # The same zip with a new source beside the old bytecode, same time stamp: the source is what runs.
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["pkg/mod.py"] = b"VALUE = 2\n"
    _zip(path, files)
    assert _import(path, "pkg.mod") == (f"{path}/pkg/mod.py", "2")


def test_a_traceback_from_the_bytecode_names_the_source_in_the_zip(tmp_path):
    path = tmp_path / "lib.zip"
    _zip(path, {"boom.py": "VALUE = 1\n\ndef fail():\n    raise ValueError('x')\n"})
    pyspark_zips.add_bytecode(path)
    result = subprocess.run([sys.executable, "-c", "import boom; boom.fail()"], env={"PYTHONPATH": str(path)},
                            capture_output=True, text=True)
    assert f'File "{path}/boom.py", line 4, in fail' in result.stderr


def test_set_up_left_bytecode_in_the_venvs_pyspark_zips():
    paths = pyspark_zips.zips()
    assert {p.name.split("-")[0] for p in paths} == {"pyspark.zip", "py4j"}
    assert all(pyspark_zips.has_bytecode(p) for p in paths)
