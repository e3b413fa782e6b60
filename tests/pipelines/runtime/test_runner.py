"""Running a pipeline: the runner chosen, run ids, and a run that did not end DONE."""
from __future__ import annotations

import re

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from altbeam.pipelines.catalog.layout import check_run_id
from altbeam.pipelines.runtime import runner


def test_new_run_ids_sort_by_time_and_name_files():
    run_id = runner.new_run_id()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", run_id)
    assert check_run_id(run_id) == run_id
    assert runner.new_run_id() != run_id


@pytest.mark.parametrize("flags,local", [
    ([], True), (["--runner", "DirectRunner"], True), (["--runner=direct"], True),
    (["--runner", "DataflowRunner"], False)])
def test_which_runs_are_local(flags, local):
    assert runner.runs_locally(PipelineOptions(flags=flags)) is local


def test_a_local_pipeline_runs_in_process_and_its_output_is_there(tmp_path):
    options = PipelineOptions(flags=["--save_main_session"])
    p = runner.new_pipeline(options)
    assert options.view_as(SetupOptions).save_main_session is False
    (p | beam.Create(["a", "b"]) | beam.Map(str.upper)
     | beam.io.WriteToText(str(tmp_path / "out"), shard_name_template=""))
    runner.run_pipeline(p)
    assert sorted((tmp_path / "out").read_text().split()) == ["A", "B"]


class _Ended:
    """A pipeline stand-in whose run ends in a given state."""

    def __init__(self, state):
        self._state = state

    def run(self):
        return self

    def wait_until_finish(self):
        return self._state


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED",
                                   beam.runners.runner.PipelineState.FAILED])
def test_a_run_that_did_not_end_done_raises(state):
    with pytest.raises(RuntimeError, match="pipeline ended in state"):
        runner.run_pipeline(_Ended(state))


@pytest.mark.parametrize("state", [None, "DONE", beam.runners.runner.PipelineState.DONE])
def test_a_run_that_ended_done_passes(state):
    assert runner.run_pipeline(_Ended(state)) is None
