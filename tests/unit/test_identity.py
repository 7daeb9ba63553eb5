"""What a job's results belong to: the checkpoint's query id and offsets, read from Spark's files."""

import json

import pytest

from sfcrime.results import ResultsPlace

from sfcrime.errors import UserError
from sfcrime.stream.identity import checkpoint_offsets, checkpoint_query_id, offsets_gone_back, start_over


def write_checkpoint(directory, offsets_by_batch, query_id="q-1"):
    (directory / "offsets").mkdir(parents=True)
    (directory / "metadata").write_text(json.dumps({"id": query_id}) + "\n")
    for batch_id, offsets in offsets_by_batch.items():
        (directory / "offsets" / str(batch_id)).write_text("v1\n{\"batchWatermarkMs\":0}\n" + json.dumps(offsets))
    return directory


def test_the_latest_offsets_of_either_source_are_read(tmp_path):
    ours = write_checkpoint(tmp_path / "a", {0: {"0": 5, "1": 7}, 1: {"0": 10, "1": 12}})
    connector = write_checkpoint(tmp_path / "b", {3: {"calls": {"0": 4, "1": 9}}})
    assert checkpoint_query_id(ours) == "q-1" and checkpoint_query_id(tmp_path / "none") is None
    assert checkpoint_offsets(ours) == {0: 10, 1: 12}
    assert checkpoint_offsets(connector) == {0: 4, 1: 9}
    assert offsets_gone_back(ours, {0: 10, 1: 15}) is None
    assert offsets_gone_back(ours, {0: 3, 1: 15}) == "partition 0 ends at offset 3, but the query already read it to 10"
    assert "partition 1 is gone" in offsets_gone_back(ours, {0: 10})


def test_start_over_deletes_results_and_checkpoint_but_not_a_directory_that_is_no_checkpoint(tmp_path):
    results = tmp_path / "results.sqlite"
    results.write_text("x")
    checkpoint = write_checkpoint(tmp_path / "checkpoint", {0: {"0": 1}})
    start_over(tmp_path, checkpoint, ResultsPlace(tmp_path))
    assert not results.exists() and not checkpoint.exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="does not look like a Spark checkpoint"):
        start_over(tmp_path, precious, ResultsPlace(tmp_path))
    assert (precious / "thesis.tex").exists()


def test_a_restart_says_after_which_batch_and_from_which_offsets_it_resumes(tmp_path):
    from sfcrime.stream.identity import resume_point

    checkpoint = write_checkpoint(tmp_path / "c", {0: {"calls": {"0": 500, "1": 1500}}, 1: {"calls": {"0": 1000, "1": 2000}},
                                                   2: {"calls": {"0": 1200, "1": 2100}}})  # batch 2 planned, not done
    assert resume_point(checkpoint) is None  # nothing committed: a new query, nothing to say
    (checkpoint / "commits").mkdir()
    (checkpoint / "commits" / "0").write_text("v1\n{}")
    (checkpoint / "commits" / "1").write_text("v1\n{}")
    assert resume_point(checkpoint) == "resuming after batch 1 (offsets read: partition 0 at 1,000, partition 1 at 2,000)"
