"""The results store: a batch is added once; sliding windows are sums of panes."""

import os
import sqlite3

from sfcrime.results import ResultsPlace, ResultStore


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
    db = sqlite3.connect(tmp_path / "results.sqlite")
    assert db.execute("SELECT count FROM locations").fetchone() == (5,)
    assert db.execute("SELECT COUNT(*) FROM batches").fetchone() == (2,)


def test_results_of_other_settings_are_not_mixed(tmp_path):
    import pytest

    from sfcrime.errors import UserError

    ResultStore(tmp_path).check_settings({"window": "1 hour", "topic": "calls"})
    with pytest.raises(UserError, match="other settings"):
        ResultStore(tmp_path).check_settings({"window": "2 hours", "topic": "calls"})


def test_sliding_windows_are_sums_of_panes(tmp_path):
    store = ResultStore(tmp_path)
    store.check_settings({"window_seconds": "3600", "pane_seconds": "1800"})
    store.write_batch(0, counts(0, "Theft", 1))
    store.write_batch(1, counts(1800, "Theft", 10))
    with ResultsPlace(tmp_path).open_reader() as results:
        windows = results.window_counts()
    # panes [0, 1800) and [1800, 3600): windows starting at -1800, 0 and 1800
    assert windows == [(-1800, 1800, "Theft", 1), (0, 3600, "Theft", 11), (1800, 5400, "Theft", 10)]


def test_a_late_call_is_counted_and_marks_its_final_window_revised(tmp_path):
    from sfcrime.answers import answers

    store = ResultStore(tmp_path)
    store.check_settings({"window_seconds": "3600", "pane_seconds": "3600", "watermark_seconds": "3600",
                          "window": "1 hour", "slide": "1 hour"})
    batch = counts(36000, "Theft", 4)
    batch["total"][0]["event_s_max"] = 36000 + 3 * 3600  # the stream is 3 hours past the first pane's end
    assert store.write_batch(0, batch)
    assert store.write_batch(1, counts(0, "Theft", 2))  # 10 hours behind: late, counted all the same
    result = answers(tmp_path)
    assert result["total_calls"] == 6 and result["late_calls_counted"] == 2 and result["revised_windows"] == 1


def test_results_of_another_query_are_refused_in_the_batch_transaction(tmp_path):
    import pytest

    from sfcrime.errors import UserError

    store = ResultStore(tmp_path)
    store.check_settings({"window_seconds": "3600", "pane_seconds": "3600"})
    assert store.write_batch(0, counts(0, "Theft", 1), {"query_id": "a", "topic_id": "t1"})
    with pytest.raises(UserError, match="another query"):
        store.write_batch(1, counts(0, "Theft", 1), {"query_id": "b", "topic_id": "t1"})
    with pytest.raises(UserError, match="another topic id t1 \\(now t2\\)"):
        store.write_batch(1, counts(0, "Theft", 1), {"query_id": "a", "topic_id": "t2"})


def test_a_topic_id_kept_in_librdkafkas_base64_is_the_same_topic_in_kafkas(tmp_path):
    """Results made before topic ids were written as Kafka writes them (URL-safe) go on; another id is refused."""
    import pytest

    from sfcrime.errors import UserError

    store = ResultStore(tmp_path)
    store.check_settings({"window_seconds": "3600", "pane_seconds": "3600"})
    assert store.write_batch(0, counts(0, "Theft", 1), {"query_id": "a", "topic_id": "fn/XQmYoQziIjprJIjSx+w"})
    assert store.write_batch(1, counts(0, "Theft", 1), {"query_id": "a", "topic_id": "fn_XQmYoQziIjprJIjSx-w"})
    with pytest.raises(UserError, match="another topic id fn_XQmYoQziIjprJIjSx-w \\(now fn_XQmYoQziIjprJIjSx_w\\)"):
        store.write_batch(2, counts(0, "Theft", 1), {"query_id": "a", "topic_id": "fn_XQmYoQziIjprJIjSx_w"})


def test_calls_of_a_repeated_hour_move_to_its_second_occurrence_whatever_the_arrival_order(tmp_path):
    # 2018-11-04 01:xx read as PDT (first occurrence): 08:xx UTC. 183080266 at "01:01" comes after 01:56.
    first = 1541318400  # 01:00 PDT
    calls = [("183080143", first + 3 * 60), ("183080262", first + 56 * 60), ("183080266", first + 60),
             ("183080365", first + 59 * 60)]
    for order in (calls, calls[::-1]):
        store = ResultStore(tmp_path / str(id(order)))
        store.check_settings({"window_seconds": "3600", "pane_seconds": "3600"})
        for batch_id, (crime_id, t) in enumerate(order):
            batch = counts(first, "Theft", 1)
            batch["repeated_hour"] = [{"rh_crime_id": crime_id, "rh_time": t, "rh_type": "Theft"}]
            store.write_batch(batch_id, batch)
        panes = dict(sqlite3.connect(tmp_path / str(id(order)) / "results.sqlite").execute("SELECT pane_start, count FROM crime_type_panes"))
        assert panes == {first: 2, first + 3600: 2}


def test_an_output_that_is_a_file_or_holds_no_sqlite_is_one_line(tmp_path):
    import pytest

    from sfcrime.errors import UserError

    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError, match="^--output .*a-file is a file: it names a folder for the results$"):
        ResultStore(tmp_path / "a-file")
    with pytest.raises(UserError, match="^cannot use --output .*: Not a directory$"):
        ResultStore(tmp_path / "a-file" / "below")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.sqlite").write_text("not a database")
    with pytest.raises(UserError, match=r"results.sqlite: file is not a database \(use another --output\)$"):
        ResultStore(tmp_path / "other")
    ResultStore(tmp_path / "new").close()  # and a new folder is made, as before


def test_the_lock_holder_is_the_pid_the_lock_file_names_or_none(tmp_path):
    from sfcrime.results import OutputLock, lock_holder

    assert lock_holder(tmp_path) is None  # no lock file yet
    with OutputLock(tmp_path):
        assert lock_holder(tmp_path) == os.getpid()
    (tmp_path / ".lock").write_text("not a pid\n")
    assert lock_holder(tmp_path) is None


def test_results_written_before_per_partition_watermarks_are_read_as_they_were(tmp_path):
    """Readers open the results read-only, so tables added since (partitions, data_loss) may be missing:
    the report, the health and /metrics read such results, with the watermark they had then."""
    from sfcrime.dashboard.metrics import exposition
    from sfcrime.answers import answers

    store = ResultStore(tmp_path)
    store.check_settings({"window_seconds": "3600", "pane_seconds": "3600", "watermark_seconds": "3600",
                          "window": "1 hour", "slide": "1 hour"})
    batch = counts(36000, "Theft", 4)
    batch["total"][0]["event_s_max"] = 36000 + 3 * 3600
    store.write_batch(0, batch)
    store.close()
    with sqlite3.connect(tmp_path / "results.sqlite") as db:  # as an older version left them
        db.execute("DROP TABLE partitions")
        db.execute("DROP TABLE data_loss")
        db.execute("DELETE FROM meta WHERE key = 'job_watermark'")
    result = answers(tmp_path)
    assert result["total_calls"] == 4 and result["watermark"] == "1970-01-01 04:00"  # the front less an hour, SF time
    assert result["pipeline"]["partitions"] == [] and result["data_loss"] == {"messages": 0, "exact": True, "ranges": []}
    assert b"sfcrime_calls_counted_total 4.0" in exposition(tmp_path)
