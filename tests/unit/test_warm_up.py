"""The warm-up's generated calls: what the job's plan takes as calls, and nothing it would set aside."""

import json
from datetime import datetime

from sfcrime.stream.warm_up import ROWS_PER_BATCH, generated_calls


def test_generated_calls_are_valid_distinct_calls_a_file_a_batch(tmp_path):
    generated_calls(3, tmp_path, ["ADV", "CIT"])
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["0000.json", "0001.json", "0002.json"]
    calls = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(calls) == 3 * ROWS_PER_BATCH
    assert len({c["crime_id"] for c in calls}) == len(calls)  # the dedupe keeps every one
    assert {c["disposition"] for c in calls} == {"ADV", "CIT"}
    times = {datetime.strptime(c["call_date_time"], "%Y-%m-%dT%H:%M:%S.%f") for c in calls}
    assert min(times).date() == max(times).date() and len({t.hour for t in times}) == 24  # a day of panes
    assert all(c["original_crime_type_name"] and c["address"] for c in calls)
