"""WritebackOptions from the command line: one builder for `altbeam writeback` and
`altbeam caption --write-metadata` (no exiftool, no pipeline)."""
from __future__ import annotations

import dataclasses

import pytest

from altbeam.pipelines.caption.options import parse_args
from altbeam.pipelines.writeback.options import WritebackOptions, writeback_options
from altbeam.pipelines.writeback.pipeline import make_parser
from altbeam.pipelines.writeback.sidecars import sidecar_names

FLAGS = ["--xmp-description", "--iptc-caption", "--overwrite-existing", "--min-score", "-1.5",
         "--sidecar-fallback", "--sidecar-naming", "stem", "--keywords", "--include-status",
         "unsure,ok"]


def test_both_commands_read_the_same_flags_the_same_way(tmp_path):
    wb_args, _ = make_parser().parse_known_args(["cat", *FLAGS])
    from_writeback = writeback_options(wb_args, "r1", started_at=5.0)
    config, _, _ = parse_args([str(tmp_path), "--catalog", "cat", "--model", "m",
                               "--run-id", "r1", "--write-metadata", *FLAGS])
    assert from_writeback == WritebackOptions(
        fields=("alt_text", "xmp_description", "iptc_caption", "xmp_keywords",
                "iptc_keywords"), overwrite_existing=True, min_score=-1.5,
        include_status=("unsure",), sidecar_fallback=True, sidecar_naming="stem",
        run_id="r1", started_at=5.0)
    assert config.writeback == dataclasses.replace(
        from_writeback, started_at=config.writeback.started_at)
    assert config.writeback.started_at > 0


def test_defaults_and_dry_run():
    args, _ = make_parser().parse_known_args(["cat", "--dry-run"])
    options = writeback_options(args, "r2", started_at=0.0)
    assert options == WritebackOptions(dry_run=True, run_id="r2")
    assert options.fields == ("alt_text",) and not options.update_mtime
    assert options.include_status == ()       # ok captions only (and rows from before the gate)
    # no --sidecar-naming: photo.jpg.xmp for an image, IMG_0001.xmp for a RAW file
    assert sidecar_names({"uri": "/a/photo.jpg", "format": "JPEG"}, options) == [
        "/a/photo.jpg.xmp"]
    assert sidecar_names({"uri": "/a/IMG_0001.CR2", "format": "RAW/CR2"}, options) == [
        "/a/IMG_0001.xmp", "/a/IMG_0001.CR2.xmp"]
    assert sidecar_names({"uri": "/a/x.dng", "format": "TIFF"}, options)[0] == "/a/x.xmp"


def test_update_mtime_and_sidecar_naming_from_both_commands(tmp_path):
    wb_args, _ = make_parser().parse_known_args(["cat", "--update-mtime",
                                                 "--sidecar-naming", "ext"])
    options = writeback_options(wb_args, "r3", started_at=0.0)
    assert options.update_mtime and options.sidecar_naming == "ext"
    assert sidecar_names({"uri": "/a/IMG_0001.CR2", "format": "RAW/CR2"}, options) == [
        "/a/IMG_0001.CR2.xmp", "/a/IMG_0001.xmp"]
    config, _, _ = parse_args([str(tmp_path), "--catalog", "cat", "--model", "m",
                               "--write-metadata", "--update-mtime"])
    assert config.writeback.update_mtime
    with pytest.raises(SystemExit):   # like every writeback flag: only with --write-metadata
        parse_args([str(tmp_path), "--catalog", "cat", "--model", "m", "--update-mtime"])


def test_caption_refuses_writeback_flags_without_write_metadata(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args([str(tmp_path), "--catalog", "cat", "--model", "m", "--sidecar"])
    assert e.value.code == 2
    assert "--sidecar only applies with --write-metadata" in capsys.readouterr().err
    config, _, _ = parse_args([str(tmp_path), "--catalog", "cat", "--model", "m"])
    assert config.writeback is None


def test_include_status_from_both_commands_refuses_captionless_statuses(tmp_path, capsys):
    config, _, _ = parse_args([str(tmp_path), "--catalog", "cat", "--model", "m",
                               "--write-metadata", "--include-status", "contradicted"])
    assert config.writeback.include_status == ("contradicted",)
    for argv in (["--write-metadata", "--include-status", "blank"], ["--include-status",
                                                                     "unsure"]):
        with pytest.raises(SystemExit) as e:
            parse_args([str(tmp_path), "--catalog", "cat", "--model", "m", *argv])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --include-status: 'blank' rows are never written" in err
    assert "--include-status only applies with --write-metadata" in err
    with pytest.raises(ValueError, match="only unsure, contradicted can be included"):
        WritebackOptions(include_status=("too_small",))
    with pytest.raises(ValueError, match="name no caption field"):
        WritebackOptions(fields=("xmp_keywords",))
