"""Draw docs/architecture.svg from docs/architecture.dot with Graphviz's `dot` (`make docs`).

The picture carries the SHA-256 of the source it was drawn from, so a test can tell a picture drawn from
an older source (file times say nothing in a fresh clone).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
SOURCE, PICTURE = DOCS / "architecture.dot", DOCS / "architecture.svg"


def source_digest() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def main() -> int:
    if shutil.which("dot") is None:
        print("error: Graphviz's dot is missing: make setup-docs (Debian's graphviz)", file=sys.stderr)
        return 1
    svg = subprocess.run(["dot", "-Tsvg", str(SOURCE)], check=True, capture_output=True, text=True).stdout
    svg = svg.replace("<svg ", f"<!-- drawn from architecture.dot sha256 {source_digest()} -->\n<svg ", 1)
    PICTURE.write_text(svg)
    print(f"drew {PICTURE.relative_to(DOCS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
