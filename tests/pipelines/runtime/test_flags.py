"""Beam/Dataflow flags anywhere around a job's inputs; any other unknown flag refused."""
from __future__ import annotations

import argparse

import pytest
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from altbeam.pipelines import cli
from altbeam.pipelines.caption import options as caption_options
from altbeam.pipelines.features import pipeline as features
from altbeam.pipelines.runtime import flags
from altbeam.pipelines.writeback import pipeline as writeback

BEAM = ["--runner", "DirectRunner"]


def caption_split(*argv):
    return flags.split_flags(list(argv), caption_options.make_parser())


@pytest.mark.parametrize("argv", [
    ["--runner", "DirectRunner", "--catalog", "out/", "a/", "b/"],       # before
    ["a/", "--runner", "DirectRunner", "b/", "--catalog", "out/"],       # between
    ["a/", "b/", "--catalog", "out/", "--runner", "DirectRunner"],       # after
    ["--runner=DirectRunner", "a/", "--catalog=out/", "b/"],             # --flag=value
    ["--runner", "DirectRunner", "--catalog", "out/", "--", "a/", "b/"],  # -- ends flags
])
def test_runner_anywhere_around_the_inputs(argv):
    config, beam_argv, _ = caption_options.parse_args(["--model", "m", *argv])
    assert config.inputs == ["a/", "b/"] and config.catalog == "out"
    assert beam_argv in (["--runner", "DirectRunner"], ["--runner=DirectRunner"])
    assert PipelineOptions(flags=beam_argv).view_as(StandardOptions).runner == "DirectRunner"


def test_boolean_and_value_flags_of_both_parsers_interleave():
    own, beam = caption_split(
        "a/", "--save_main_session", "b/", "--max_num_workers", "7", "--force", "c/",
        "--experiments=use_runner_v2", "--experiments", "x", "--min-score", "-1.5",
        "--catalog", "cat", "--project", "p", "--write-metadata", "--no_auth", "d/")
    assert beam == ["--save_main_session", "--max_num_workers", "7",
                    "--experiments=use_runner_v2", "--experiments", "x", "--project", "p",
                    "--no_auth"]
    assert own == ["--force", "--min-score", "-1.5", "--catalog", "cat", "--write-metadata",
                   "--", "a/", "b/", "c/", "d/"]
    options = PipelineOptions(flags=beam)
    assert options.view_as(SetupOptions).save_main_session is True
    assert options.view_as(WorkerOptions).max_num_workers == 7
    assert options.view_as(GoogleCloudOptions).project == "p"
    args = caption_options.make_parser().parse_args(own)
    assert args.inputs == ["a/", "b/", "c/", "d/"] and args.min_score == -1.5


def test_words_after_double_dash_are_inputs_even_if_they_look_like_flags():
    own, beam = caption_split("--catalog", "c", "--", "--runner", "-x.jpg")
    assert (own, beam) == (["--catalog", "c", "--", "--runner", "-x.jpg"], [])


@pytest.mark.parametrize("parser,argv,inputs", [
    (writeback.make_parser, ["--runner", "DirectRunner", "cat", "--dry-run",
                             "--max_num_workers=2"], "cat"),
    (writeback.make_parser, ["--dry-run", "--project", "p", "cat"], "cat"),
    (features.make_parser, ["--num_workers", "3", "data.jsonl", "--out", "o",
                            "--save_main_session"], "data.jsonl"),
])
def test_writeback_and_features_split_the_same_way(parser, argv, inputs):
    args, beam_argv = flags.parse_job_args(parser(), argv)
    assert (getattr(args, "catalog", None) or args.dataset) == inputs
    assert beam_argv and all(w not in beam_argv for w in (inputs, "--dry-run", "--out"))


def test_beam_options_come_from_every_registered_options_class():
    known = flags.beam_options()
    for option, nargs in {"--runner": None, "--project": None, "--max_num_workers": None,
                          "--experiments": None, "--save_main_session": 0,
                          "--direct_num_workers": None, "--job_endpoint": None,
                          "--dataflow_service_options": None, "--disk_size_gb": None,
                          "--streaming": 0, "--sdk_container_image": None}.items():
        assert option in known and known[option] == nargs, option
    assert "--help" not in known and "-h" not in known        # ours, not Beam's

    class LateOptions(PipelineOptions):                       # defined after import time
        @classmethod
        def _add_argparse_args(cls, parser):
            parser.add_argument("--late_option_for_test", action="store_true")

    assert flags.beam_options()["--late_option_for_test"] == 0


@pytest.mark.parametrize("flag,suggestion", [
    ("--max_num_workerz", "--max_num_workers"), ("--batch_size", "--batch-size"),
    ("--max-num-workers", "--max_num_workers"), ("--catalogue", "--catalog"),
    ("--no_such_flagg", None)])
def test_unknown_flags_are_refused_with_the_closest_known_one(flag, suggestion):
    with pytest.raises(flags.UnknownFlag) as e:
        caption_split("a/", flag, "1", "--catalog", "c")
    assert e.value.flag == flag and e.value.suggestion == suggestion
    assert str(e.value) == f"unknown flag {flag}" + (
        f" (did you mean {suggestion}?)" if suggestion else "")


def test_abbreviations_are_not_guessed():
    with pytest.raises(flags.UnknownFlag):                    # argparse would take --cat
        caption_split("a/", "--cat", "c")


def test_a_beam_flag_without_its_value_is_refused():
    with pytest.raises(flags.FlagError, match="--runner needs a value"):
        caption_split("a/", "--catalog", "c", "--runner")
    with pytest.raises(flags.FlagError, match="--project needs a value"):
        caption_split("a/", "--project", "--catalog", "c")


def test_unknown_flags_lists_each_refused_one():
    parser = caption_options.make_parser()
    assert flags.unknown_flags(["a", "--catalog", "c", *BEAM], parser) == []
    assert flags.unknown_flags(["a", "--bogus=1", "--runnerr", "x", "--catalog", "c"],
                               parser) == ["--bogus", "--runnerr"]


@pytest.mark.parametrize("command,argv", [
    ("caption", ["photos/", "--catalog", "out/", "--max_num_workerz", "3"]),
    ("writeback", ["cat/", "--max_num_workerz", "3", "--dry-run"]),
])
def test_cli_refuses_an_unknown_flag_with_status_2(command, argv, capsys, tmp_path):
    argv = [str(tmp_path / a) if a.endswith("/") else a for a in argv]
    assert cli.main([command, *argv]) == 2
    err = capsys.readouterr().err
    assert (f"altbeam {command}: unknown flag --max_num_workerz "
            "(did you mean --max_num_workers?)") in err
    assert not list(tmp_path.iterdir())          # refused before anything was written


def test_cli_refuses_a_flag_beam_would_have_discarded(capsys, tmp_path):
    assert cli.main(["caption", str(tmp_path), "--catalog", str(tmp_path / "c"),
                     "--no_such_flagg", "1"]) == 2
    assert "altbeam caption: unknown flag --no_such_flagg\n" in capsys.readouterr().err


def test_cli_help_and_usage_errors_are_statuses_not_exceptions(capsys):
    assert cli.main(["writeback", "--help"]) == 0
    assert "usage: altbeam writeback" in capsys.readouterr().out
    assert cli.main(["writeback"]) == 2                          # no CATALOG
    assert "the following arguments are required" in capsys.readouterr().err


def test_parse_job_args_exits_2_naming_the_flag(capsys):
    parser = argparse.ArgumentParser(prog="altbeam demo")
    parser.add_argument("--own-flag")
    with pytest.raises(SystemExit) as e:
        flags.parse_job_args(parser, ["--own_flag", "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        "altbeam demo: unknown flag --own_flag (did you mean --own-flag?)\n")
