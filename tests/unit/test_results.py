"""The results store: a batch is added once; sliding windows are sums of panes."""

import sqlite3

from sfcrime.results import ResultStore, window_counts


def counts(pane_start, crime_type, n):
    return {"crime_type_windows": [{"window_start": pane_start, "crime_type": crime_type, "count": n}],
            "locations": [{"address": "A St", "count": n}],
            "total": [{"count": n, "kafka_us_min": 1e6, "kafka_us_max": 2e6, "kafka_us_avg": 1.5e6}]}


def test_a_batch_is_added_exactly_once(tmp_path):
    store = ResultStore(tmp_path)
    store.check_settings({"window_seconds": "3600", "pane_seconds": "3600"})
    assert store.write_batch(0, counts(0, "Theft", 2))
    assert store.write_batch(1, counts(0, "Theft", 3))
    assert not store.write_batch(1, counts(0, "Theft", 3))  # the re-run of batch 1 after a crash
    db = sqlite3.connect(store.path)
    assert db.execute("SELECT count FROM locations").fetchone() == (5,)
    assert db.execute("SELECT COUNT(*) FROM batches").fetchone() == (2,)


def test_results_of_other_settings_are_not_mixed(tmp_path):
    import pytest

    from sfcrime.config import UserError

    ResultStore(tmp_path).check_settings({"window": "1 hour", "topic": "calls"})
    with pytest.raises(UserError, match="other settings"):
        ResultStore(tmp_path).check_settings({"window": "2 hours", "topic": "calls"})


def test_sliding_windows_are_sums_of_panes(tmp_path):
    store = ResultStore(tmp_path)
    store.check_settings({"window_seconds": "3600", "pane_seconds": "1800"})
    store.write_batch(0, counts(0, "Theft", 1))
    store.write_batch(1, counts(1800, "Theft", 10))
    windows = window_counts(sqlite3.connect(store.path))
    # panes [0, 1800) and [1800, 3600): windows starting at -1800, 0 and 1800
    assert windows == [(-1800, 1800, "Theft", 1), (0, 3600, "Theft", 11), (1800, 5400, "Theft", 10)]
