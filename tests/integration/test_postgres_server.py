"""`python -m sfcrime postgres`, driven as a person drives it: one line to start, signals from outside to
stop, its data kept across restarts, one line for a port in use."""

import os
import pwd
import re
import signal
import subprocess
import time

import psycopg
import pytest

from sfcrime.local.kafka import free_port
from tests.conftest import PYTHON, REPO



def start(port, data_dir, tmp_path):
    server = subprocess.Popen([PYTHON, "-m", "sfcrime", "postgres", "--port", str(port), "--data-dir", str(data_dir)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=(tmp_path / "server.err").open("a"),
                              text=True, start_new_session=True)
    line = server.stdout.readline()
    assert "ready" in line, line + (tmp_path / "server.err").read_text()
    return server, line


def server_processes(port):
    """(pid, owner) of the postgres processes listening on `port`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            owner = os.stat(f"/proc/{entry}").st_uid
        except OSError:
            continue
        if command and command[0].endswith(b"/postgres") and str(port).encode() in command:
            found.append((int(entry), pwd.getpwuid(owner).pw_name))
    return found


def test_the_server_starts_in_one_line_keeps_its_data_and_stops_on_sigterm_and_ctrl_c(tmp_path):
    port, data = free_port(), tmp_path / "data"
    server, line = start(port, data, tmp_path)
    url = re.search(r"--results (postgresql://\S+)", line).group(1)
    assert url == f"postgresql://sfcrime@127.0.0.1:{port}/sfcrime" and line.count("\n") == 1
    if os.getuid() == 0:  # PostgreSQL refuses root: the server runs as an unprivileged user
        owners = {owner for _, owner in server_processes(port)}
        assert owners and "root" not in owners, owners
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE kept (n int)")
        db.execute("INSERT INTO kept VALUES (42)")
    os.killpg(server.pid, signal.SIGTERM)  # as `kill` from another terminal
    assert server.wait(60) == 0
    assert not server_processes(port)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    server, _ = start(port, data, tmp_path)  # the same folder: the data is there
    with psycopg.connect(url) as db:
        assert db.execute("SELECT n FROM kept").fetchone() == (42,)
    # a port in use: one line, before anything starts
    taken = subprocess.run([PYTHON, "-m", "sfcrime", "postgres", "--port", str(port), "--data-dir",
                            str(tmp_path / "other")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert taken.returncode == 1 and taken.stderr.strip().count("\n") == 0, taken.stderr
    assert f"port {port} on 127.0.0.1 is in use" in taken.stderr and "Traceback" not in taken.stderr
    os.killpg(server.pid, signal.SIGINT)  # Ctrl-C, to the whole process group as a terminal sends it
    assert server.wait(60) == 0
    assert "Traceback" not in (tmp_path / "server.err").read_text()
    time.sleep(0.5)
    assert not server_processes(port)


def test_a_folder_that_holds_something_else_is_refused_in_one_line(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "thesis.tex").write_text("x")
    refused = subprocess.run([PYTHON, "-m", "sfcrime", "postgres", "--port", str(free_port()), "--data-dir",
                              str(tmp_path / "data")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "holds no PostgreSQL data" in refused.stderr, refused.stderr
    assert refused.stderr.strip().count("\n") == 0 and (tmp_path / "data" / "thesis.tex").exists()


HOSTILE_TEXT = ["plain", 'a "quoted" one', "back\\slash\\", "{braces}, commas", "NULL", "null", "", "  leading",
                "trailing  ", "ünïcode 街道", "new\nline", "tab\tand\r", "'single'", "\\\"both\\\"", "nul\x00byte"]


def test_text_of_any_shape_is_stored_as_it_came_in_both_stores(results_db, tmp_path):
    """The PostgreSQL writer sends a batch's rows as array literals it makes itself: every character a call's
    text can hold must come back as it went in, NULL as NULL, and counts add up over batches as in SQLite."""
    import sqlite3

    from sfcrime.results import ResultsPlace

    counts = {"locations": [{"address": text, "count": i + 1} for i, text in enumerate(HOSTILE_TEXT)],
              "crime_type_windows": [{"window_start": 3600 * i, "crime_type": text, "count": 2}
                                     for i, text in enumerate(HOSTILE_TEXT)],
              "total": [{"count": 99, "kafka_us_min": 1e15, "kafka_us_max": 1e15, "kafka_us_avg": 1e15,
                         "event_s_max": 1.5e9}]}
    settings = {"window_seconds": "3600", "pane_seconds": "3600", "watermark_seconds": "3600", "window": "1 hour"}
    for url in (None, results_db):
        store = ResultsPlace(tmp_path, url).open_store()
        store.check_settings(settings)
        for batch_id in (0, 1):
            assert store.write_batch(batch_id, counts)
        assert not store.write_batch(1, counts)  # a batch id already counted
        store.close()
    expected_places = {text: 2 * (i + 1) for i, text in enumerate(HOSTILE_TEXT)}
    in_postgres = {text.replace("\x00", "\ufffd"): n for text, n in expected_places.items()}  # its text holds no NUL
    expected_panes = {(3600 * i, text.replace("\x00", "\ufffd")): 4 for i, text in enumerate(HOSTILE_TEXT)}
    with psycopg.connect(results_db) as db:
        assert dict(db.execute("SELECT address, count FROM locations").fetchall()) == in_postgres
        assert {(s, t): n for s, t, n in db.execute("SELECT pane_start, crime_type, count FROM crime_type_panes")} \
            == expected_panes
    sqlite_files = [p for p in tmp_path.iterdir() if p.suffix in (".db", ".sqlite")]
    assert len(sqlite_files) == 1, list(tmp_path.iterdir())
    with sqlite3.connect(sqlite_files[0]) as db:
        assert dict(db.execute("SELECT address, count FROM locations").fetchall()) == expected_places


def test_counts_add_up_over_batches_whichever_way_each_table_is_written(results_db, tmp_path):
    """The PostgreSQL writer COPYs into a table still empty, MERGEs into one with rows, and takes rows with a
    null key through INSERT ... ON CONFLICT; tables fill in different batches, and a batch id already counted is
    skipped. Every table must equal an independent count of the rows sent, and SQLite's (for non-null keys)."""
    import random
    import sqlite3
    from collections import Counter

    from sfcrime.results import ResultsPlace

    pick = random.Random(30)
    places, types = [f"{n} MARKET ST" for n in range(400)], ["Theft", "Assault", "Fraud", "Burglary", "Robbery"]
    batches = []
    for batch_id in range(12):
        chosen = pick.sample(places, pick.randint(0 if batch_id == 0 else 1, 300))
        counts = {"locations": [{"address": a, "count": pick.randint(1, 5)} for a in chosen],
                  "crime_type_windows": [{"window_start": 3600 * h, "crime_type": t, "count": pick.randint(1, 9)}
                                         for h in pick.sample(range(48), 6) for t in pick.sample(types, 3)],
                  "dispositions": [{"disposition": d, "description": None, "count": 2} for d in ("ADV", "HAN")]
                  if batch_id >= 5 else [],
                  "total": [{"count": 1, "kafka_us_min": 1e15, "kafka_us_max": 1e15, "kafka_us_avg": 1e15,
                             "event_s_max": 1.5e9}]}
        batches.append(counts)
    with_null = {**batches[7], "locations": batches[7]["locations"] + [{"address": None, "count": 3}]}
    expected: dict[str, Counter] = {"locations": Counter(), "panes": Counter(), "dispositions": Counter()}
    for counts in batches[:7] + [with_null] + batches[8:]:
        for row in counts["locations"]:
            expected["locations"][row["address"]] += row["count"]
        for row in counts["crime_type_windows"]:
            expected["panes"][(row["window_start"], row["crime_type"])] += row["count"]
        for row in counts["dispositions"]:
            expected["dispositions"][row["disposition"]] += row["count"]
    settings = {"window_seconds": "3600", "pane_seconds": "3600", "watermark_seconds": "3600", "window": "1 hour"}
    for url in (None, results_db):
        for run in (batches[:6], batches[6:]):  # a restart: the second run's writer finds the tables with rows
            store = ResultsPlace(tmp_path, url).open_store()
            store.check_settings(settings)
            for counts in run:
                batch_id = batches.index(counts)
                assert store.write_batch(batch_id, with_null if url and batch_id == 7 else counts)
                if batch_id == 3:
                    assert not store.write_batch(2, counts)  # already counted: nothing of it is added
            store.close()
    with psycopg.connect(results_db) as db:
        assert Counter(dict(db.execute("SELECT address, count FROM locations"))) == expected["locations"]
        assert Counter({(s, t): n for s, t, n in db.execute("SELECT pane_start, crime_type, count FROM crime_type_panes")}) \
            == expected["panes"]
        assert Counter(dict(db.execute("SELECT disposition, count FROM dispositions"))) == expected["dispositions"]
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert Counter(dict(db.execute("SELECT address, count FROM locations"))) \
            == expected["locations"] - Counter({None: 3})
        assert Counter(dict(db.execute("SELECT disposition, count FROM dispositions"))) == expected["dispositions"]


def test_a_writer_that_keeps_the_meta_and_clocks_writes_what_one_reading_them_back_writes(results_db, tmp_path):
    """The writer keeps the meta and the partitions' clocks it committed instead of reading them back (one round
    trip a batch). Whatever comes between its batches (a look at Kafka's end offsets, a line of meta, a replayed
    batch, a restart, the tables emptied), it must leave each table as a writer opened afresh for every step,
    which reads them all."""
    import random

    from sfcrime.results import ResultsPlace
    from sfcrime.results.store import Observation, read_clocks, read_meta

    base = results_db.rsplit("/", 1)[0]
    reading_url = f"{results_db}_reads"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {reading_url.rsplit('/', 1)[1]}")
    settings = {"window_seconds": "3600", "pane_seconds": "3600", "watermark_seconds": "3600", "window": "1 hour"}
    pick = random.Random(31)
    steps, now, read_to, ends, batch_id = [], 1.7e9, {0: 0, 1: 0, 2: 0}, {0: 0, 1: 0, 2: 0}, 0
    for _ in range(60):
        now += pick.choice((0.5, 3, 40))
        for p in ends:
            ends[p] += pick.choice((0, 0, 5))
        kind = {39: "batch", 40: "discard", 41: "batch"}.get(len(steps)) or pick.choice(
            ("batch", "batch", "batch", "look", "meta", "replay", "restart"))
        if kind == "batch":
            read = {p: pick.randint(read_to[p], ends[p]) for p in pick.sample(sorted(ends), pick.randint(1, 3))}
            read_to.update(read)
            event_times = [{"partition": p, "event_s_max": 1.54e9 + 3600 * batch_id + pick.randint(-9000, 900)}
                           for p in read]
            steps.append(("batch", batch_id, {
                "partition_event_times": event_times,
                "crime_type_windows": [{"window_start": 1_539_993_600 + 3600 * (batch_id - pick.randint(0, 3)),
                                        "crime_type": "Theft", "count": 1}],
                "total": [{"count": 1, "kafka_us_min": 1e15, "kafka_us_max": 1e15, "kafka_us_avg": 1e15,
                           "event_s_max": max(e["event_s_max"] for e in event_times)}]},
                Observation(now, 30.0, read_to=dict(read), end_offsets=dict(ends))))
            batch_id += 1
        elif kind == "look":
            steps.append(("look", Observation(now, 30.0, end_offsets=dict(ends))))
        elif kind == "meta":
            steps.append(("meta", {"broker_lost_since": pick.choice(("", str(now)))}))
        elif kind == "discard":  # as --start-over does, the tables emptied
            steps.append(("discard",))
        elif kind == "replay" and batch_id:
            steps.append(("batch", batch_id - 1, steps[-1][2] if steps[-1][0] == "batch" else {}, None))
        else:
            steps.append(("restart",))

    def run(store, step):
        if step[0] == "batch":
            return store.write_batch(step[1], step[2], {"query_id": "q"}, step[3])
        if step[0] == "look":
            return store.observe_partitions(step[1])
        if step[0] == "meta":
            return store.set_meta(**step[1])
        removed = store.discard()
        store.check_settings(settings)  # as the job starting over does
        return removed

    sqlite = [ResultsPlace(tmp_path / "kept"), ResultsPlace(tmp_path / "read")]
    postgres = [ResultsPlace(tmp_path / "pg", results_db), ResultsPlace(tmp_path / "pg", reading_url)]
    for places in (sqlite, postgres):
        keeping = places[0].open_store()
        keeping.check_settings(settings)
        for step in steps:
            if step[0] == "restart":
                keeping.close()
                keeping = places[0].open_store()
                keeping.check_settings(settings)
                continue
            reading = places[1].open_store()
            reading.check_settings(settings)
            assert run(keeping, step) == run(reading, step), step
            reading.close()
            tables = []
            for place in places:
                reader = place.open_reader()
                db = reader.database
                tables.append((read_meta(db), read_clocks(db),
                               db.execute("SELECT batch_id, rows FROM batches ORDER BY batch_id").fetchall(),
                               db.execute("SELECT * FROM revisions ORDER BY batch_id, pane_start").fetchall()))
                reader.close()
            assert tables[0] == tables[1], step
        keeping.close()
