"""The same answers as a plain Spark batch job over the calls file: the baseline the streaming job is
benchmarked against (bench/), and a cross-check, since both run the same transforms.

Usage:
    python -m sfcrime.baseline.batch [FILE]      # prints the answers' totals as JSON
"""

from __future__ import annotations

import json
import sys
import time

from ..config import DEFAULT_INPUT, DEFAULT_RADIO_CODES
from ..dataset import load_radio_codes
from ..stream import transforms as T
from .files import calls_from_file
from ..stream.session import build_session


def batch_counts(spark, input_path: str, radio_codes_path: str, pane_seconds: int = 3600) -> dict[str, list[dict]]:
    calls = calls_from_file(spark, input_path)
    valid = calls.where("malformed IS NULL").dropDuplicates(["crime_id"])
    bad = calls.where("malformed IS NOT NULL")
    joined = T.with_descriptions(valid.unionByName(bad), load_radio_codes(radio_codes_path))
    return T.count_table(T.count_columns(joined, pane_seconds).toArrow())


def main(argv: list[str]) -> int:
    started = time.monotonic()
    spark = build_session("sfcrime-batch", master="local[*]",
                          defaults={"spark.sql.shuffle.partitions": "4", "spark.ui.showConsoleProgress": "false"})
    counts = batch_counts(spark, argv[0] if argv else str(DEFAULT_INPUT), str(DEFAULT_RADIO_CODES))
    spark.stop()
    total = counts["total"][0]["count"] if counts["total"] else 0
    by_type: dict[str, int] = {}
    for row in counts["crime_type_windows"]:
        by_type[row["crime_type"]] = by_type.get(row["crime_type"], 0) + row["count"]
    print(json.dumps({"total_rows": total, "calls": sum(by_type.values()), "malformed": len(counts["dead_letters"]),
                      "top_crime_types": sorted(by_type.items(), key=lambda kv: -kv[1])[:5],
                      "seconds": round(time.monotonic() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
