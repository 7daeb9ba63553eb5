"""README and docs/: short enough to read, every relative link resolving, the picture drawn from its
source as it is now, and the answers README shows equal to an independent count of the calls file."""

import gzip
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

from sfcrime.glossary import labelled
from sfcrime.report.readme import readme_answers

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_is_read_in_five_minutes():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+://|^#|^mailto:", target):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []


def test_the_picture_was_drawn_from_its_source_as_it_is():
    """`make docs` draws docs/architecture.svg and writes the source's digest into it: a changed source
    with the old picture fails here (file times say nothing in a fresh clone)."""
    digest = hashlib.sha256((REPO / "docs" / "architecture.dot").read_bytes()).hexdigest()
    assert f"drawn from architecture.dot sha256 {digest}" in (REPO / "docs" / "architecture.svg").read_text()


def test_the_readmes_answers_equal_an_independent_count_of_the_file():
    """The block `report --readme` writes from a full replay's answers, against the file counted here:
    each crime_id once, the top ten crime types and addresses (ties by name, as the report orders)."""
    with gzip.open(REPO / "police-department-calls-for-service.json.gz", "rt", encoding="utf-8") as f:
        calls = {r["crime_id"]: r for r in json.load(f)}.values()
    block = readme_answers(REPO / "README.md")
    assert f"**{len(calls):,} calls**" in block
    top = lambda counter: sorted(counter.items(), key=lambda kv: (-kv[1], kv[0].encode()))[:10]  # noqa: E731
    kinds = top(Counter(c["original_crime_type_name"] for c in calls))
    places = top(Counter(c["address"] for c in calls))
    rows = [line.split("|")[1:-1] for line in block.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [(labelled(k), f"{n:,}") for k, n in kinds]
    assert [(r[3].strip(), r[4].strip()) for r in rows] == [(a, f"{n:,}") for a, n in places]
