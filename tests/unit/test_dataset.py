"""Reading the calls file: every form gives the same records; bad files give one clear UserError."""

import bz2
import gzip
import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sfcrime.errors import UserError
from sfcrime.dataset import EventClock, iter_records, load_calls, load_radio_codes, parse_event_time
from tests.conftest import REPO, write_calls


def call(crime_id, when, **extra):
    record = {"crime_id": str(crime_id), "original_crime_type_name": "Passing Call", "call_date_time": when,
              "disposition": "HAN", "address": "900 Block Of Market St"}
    record.update(extra)
    return record


NEWEST_FIRST = [call(3, "2018-10-02T11:00:00.000"), call(2, "2018-10-02T10:00:00.000"),
                call(1, "2018-10-02T10:00:00.000"), call(0, "2018-10-02T09:11:00.000")]


@pytest.mark.parametrize("compress", [None, "gz", "bz2"])
def test_plain_gzip_and_bzip2_give_the_same_records(tmp_path, compress):
    path = write_calls(tmp_path / "calls", NEWEST_FIRST, compress)
    assert list(iter_records(path)) == NEWEST_FIRST


def test_compact_and_chunk_spanning_json_is_read_whole(tmp_path, monkeypatch):
    import sfcrime.dataset as dataset

    monkeypatch.setattr(dataset, "_CHUNK_CHARS", 7)  # every record spans many chunks
    path = tmp_path / "calls.json"
    path.write_text(json.dumps(NEWEST_FIRST + [{"crime_id": 12345, "n": 1.5e3}], separators=(",", ":")))
    assert list(iter_records(path)) == NEWEST_FIRST + [{"crime_id": 12345, "n": 1.5e3}]


def test_event_time_order_is_oldest_first_and_stable_for_ties(tmp_path):
    calls = load_calls(write_calls(tmp_path / "calls", NEWEST_FIRST))
    assert [key for key, _, _ in calls] == [b"0", b"1", b"2", b"3"]
    times = [t for _, _, t in calls]
    assert times == sorted(times)
    assert times[1] - times[0] == 49 * 60


def test_file_order_keeps_the_file(tmp_path):
    calls = load_calls(write_calls(tmp_path / "calls", NEWEST_FIRST), order="file")
    assert [key for key, _, _ in calls] == [b"3", b"2", b"1", b"0"]


def test_skip_and_limit_apply_after_ordering(tmp_path):
    calls = load_calls(write_calls(tmp_path / "calls", NEWEST_FIRST), skip=1, limit=2)
    assert [key for key, _, _ in calls] == [b"1", b"2"]


def test_values_are_the_records_unchanged(tmp_path):
    record = call(7, "2018-10-02T09:11:00.000", address="Caf\u00e9 \"Le\" St")
    calls = load_calls(write_calls(tmp_path / "calls", [record]))
    (key, value, _), = list(calls)
    assert key == b"7"
    assert json.loads(value.decode("utf-8")) == record
    assert "Café".encode() in value


def test_records_without_event_time_are_kept(tmp_path):
    records = [call(2, "2018-10-02T10:00:00.000"), call(1, "not a time"), call(0, "2018-10-02T09:00:00.000")]
    calls = load_calls(write_calls(tmp_path / "calls", records))
    assert len(calls) == 3 and calls.without_event_time == 1


def test_sf_local_time_follows_daylight_saving():
    clock = EventClock()
    # 2018-11-04 01:30 happens twice in San Francisco; 09:11 on 2018-10-02 is PDT (UTC-7)
    assert clock.epoch_seconds("2018-10-02T09:11:00.000") == 1538496660
    assert clock.epoch_seconds("2018-12-31T23:57:00.000") == 1546329420  # PST (UTC-8)
    assert clock.epoch_seconds("2018-10-02T09:11:00Z") == 1538471460
    assert parse_event_time("Oct 2 2018 9:11 AM").hour == 9  # dateutil's fallback for other formats
    assert clock.epoch_seconds("") is None and clock.epoch_seconds(None) is None


def test_the_bundled_dataset_is_the_documented_one():
    calls = load_calls(REPO / "police-department-calls-for-service.json.gz")
    assert len(calls) == 199_999 and calls.without_event_time == 0
    times = [t for _, _, t in calls]
    assert times == sorted(times)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"{\"crime_id\": 1}", "expected a JSON array"),
    (b"[1, 2]", "is a int, expected a JSON object"),
    (b"[{\"crime_id\": 1}, {\"crime_id\"", "truncated"),
    (b"[{\"crime_id\": 1} {\"crime_id\": 2}]", "expected ',' or ']'"),
    (b"[{\"crime_id\": tru}]", "not valid JSON"),
    (b"[]", "no call records"),
    (b"[{\"a\": 1}] trailing", "after the closing"),
    (b"\xff\xfe[]", "not UTF-8"),
])
def test_bad_files_raise_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_calls(path)


def test_a_json_array_that_holds_no_calls_is_refused_by_name_of_what_it_lacks(tmp_path):
    """radio_code.json was sent as 19 junk calls; a file of calls with some records broken is still read."""
    with pytest.raises(UserError) as refused:
        load_calls(REPO / "radio_code.json")
    assert str(refused.value) == (f"{REPO / 'radio_code.json'}: not a calls file: none of its 19 records has a "
                                  "crime_id or a call_date_time (the first has: description, disposition_code)")
    mixed = load_calls(write_calls(tmp_path / "calls", [{"note": "no call"}, call(1, "2018-10-02T10:00:00.000")]))
    assert len(mixed) == 2


def test_truncated_compressed_files_raise_one_clear_error(tmp_path):
    data = json.dumps(NEWEST_FIRST * 50).encode()
    for name, compress in (("calls.json.gz", gzip.compress), ("calls.json.bz2", bz2.compress)):
        path = tmp_path / name
        path.write_bytes(compress(data)[:200])
        with pytest.raises(UserError, match="truncated|compressed"):
            load_calls(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_calls(tmp_path / "nope.json")
    with pytest.raises(UserError, match="directory"):
        load_calls(tmp_path)


def test_radio_codes_are_read_as_a_pretty_printed_array():
    codes = load_radio_codes(REPO / "radio_code.json")
    assert len(codes) == 19 and codes["HAN"] == "Handled" and codes["GOA"] == "Gone on Arrival"


def test_the_repeated_hour_of_the_fall_back_night_is_placed_by_crime_id_order(tmp_path):
    """2018-11-04 01:00-02:00 happened twice in San Francisco; the clock goes back in crime_id order."""
    records = [{"crime_id": cid, "call_date_time": f"2018-11-04T{hm}:00.000"} for cid, hm in [
        ("183080138", "00:57"), ("183080143", "01:03"), ("183080262", "01:56"), ("183080266", "01:01"),
        ("183080365", "01:59"), ("183080400", "02:05")]]
    calls = load_calls(write_calls(tmp_path / "dst", records[::-1]))
    got = {calls.keys[i].decode(): calls.event_times[i] for i in calls.order}
    pdt_1am = 1541318400  # 01:00 PDT = 08:00 UTC; 01:00 PST is an hour later
    assert got == {"183080138": pdt_1am - 180, "183080143": pdt_1am + 180, "183080262": pdt_1am + 56 * 60,
                   "183080266": pdt_1am + 3600 + 60, "183080365": pdt_1am + 3600 + 59 * 60,
                   "183080400": pdt_1am + 7200 + 300}
    assert [calls.keys[i].decode() for i in calls.order] == [r["crime_id"] for r in records]  # event-time order


HOSTILE_VALUES = st.one_of(
    st.text(), st.text(alphabet="}{,][\"\\ :"), st.integers(), st.integers(min_value=2**63, max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))


@settings(max_examples=150, deadline=None)
@given(records=st.lists(st.dictionaries(st.sampled_from(["crime_id", "address", "x", "call_date_time"]),
                                        HOSTILE_VALUES, max_size=4), min_size=1, max_size=8),
       chunk=st.sampled_from([3, 17, 64, 1 << 20]), spaced=st.booleans())
@example(records=[{"crime_id": "1"}, {"crime_id": 10**30 + 1}], chunk=1 << 20, spaced=False)  # orjson: a float
@example(records=[{"crime_id": "1", "x": 1.5e-7}], chunk=1 << 20, spaced=False)  # orjson: 1.5e-7, json 1.5e-07
def test_records_and_their_bytes_are_pythons_json_whatever_they_hold(records, chunk, spaced):
    """Text values are read many records at a time and written by orjson; anything else (a `}` in a string,
    a big integer, a float, a nested object) goes one record at a time through `json`. Either way the
    records equal Python's own json.loads of the file, and each value's bytes json.dumps's."""
    import tempfile
    from pathlib import Path

    import sfcrime.dataset as dataset
    from sfcrime.dataset import encode_record, records_and_kinds

    text = json.dumps(records, ensure_ascii=False, **({"indent": 1} if spaced else {"separators": (",", ":")}))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calls.json"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        original = dataset._CHUNK_CHARS
        dataset._CHUNK_CHARS = chunk
        try:
            read = list(records_and_kinds(path))
        finally:
            dataset._CHUNK_CHARS = original
    assert repr([r for r, _ in read]) == repr(json.loads(text))  # 1e30 == 10**30: the types must be the same too
    for record, text_only in read:
        expected = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
        assert encode_record(record, text_only) == encode_record(record) == expected


def test_a_brace_inside_a_string_at_a_chunk_end_is_read_one_record_at_a_time(tmp_path, monkeypatch):
    import sfcrime.dataset as dataset

    records = [call(1, "2018-10-02T09:00:00.000", address="A}"), call(2, "2018-10-02T09:01:00.000", address="},{")]
    path = tmp_path / "calls.json"
    path.write_text(json.dumps(records))
    for size in range(5, 120, 7):
        monkeypatch.setattr(dataset, "_CHUNK_CHARS", size)
        assert list(iter_records(path)) == records
