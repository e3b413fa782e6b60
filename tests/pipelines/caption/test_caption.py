"""The caption pipeline end to end: real DirectRunner, real files, DuckDB on the output."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import apache_beam as beam
import duckdb
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from altbeam.pipelines.caption import pipeline as caption
from altbeam.pipelines.caption.pipeline import CaptionConfig, build
from tests.pipelines.caption.test_decode import bad_files, good_files
from tests.support.kill_mid_run import kill_mid_run
from tests.support.paths import REPO as REPO_PATH

REPO = str(REPO_PATH)


def catalog_rows(cat) -> list[dict]:
    pattern = os.path.join(str(cat), "catalog", "run-*.parquet")
    if not glob.glob(pattern):
        return []
    return duckdb.sql(f"SELECT * FROM read_parquet('{pattern}') ORDER BY uri, processed_at"
                      ).fetch_arrow_table().to_pylist()


def error_rows(cat) -> list[dict]:
    pattern = os.path.join(str(cat), "errors", "run-*.parquet")
    return duckdb.sql(f"SELECT * FROM read_parquet('{pattern}') ORDER BY uri"
                      ).fetch_arrow_table().to_pylist()


def run_cli(*argv) -> int:
    return caption.main([*map(str, argv), "--no-progress"])


def photos(sample_photos) -> list[str]:
    return sorted(str(p) for p in sample_photos.glob("*.jpg"))


def copy_photos(sample_photos, dest, n=None):
    dest.mkdir(parents=True, exist_ok=True)
    for path in photos(sample_photos)[:n]:
        shutil.copy2(path, dest)
    return dest


def test_end_to_end_test_pipeline(sample_photos, contract_model, tmp_path):
    cat = tmp_path / "cat"
    config = CaptionConfig(inputs=[str(sample_photos)], catalog=str(cat),
                           model=str(contract_model), batch_size=4, run_id="r1")
    expected = photos(sample_photos)
    with test_pipeline.TestPipeline() as p:
        out = build(p, config)
        assert_that(out["rows"] | beam.Map(lambda r: r["uri"]), equal_to(expected))
        assert_that(out["errors"], equal_to([]), label="NoErrors")
    rows = catalog_rows(cat)
    assert [r["uri"] for r in rows] == expected     # ATTRIBUTION.md is not an image
    for row in rows:
        data = open(row["uri"], "rb").read()
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert row["size_bytes"] == len(data)
        with Image.open(row["uri"]) as im:
            assert (row["width"], row["height"], row["format"]) == (*im.size, "JPEG")
        assert len(row["captions"]) == len(row["scores"]) == 3
        assert row["caption"] == row["captions"][0] and row["score"] == row["scores"][0]
        assert row["model_version"] == "fixture-0" and row["run_id"] == "r1"
        assert abs(row["mtime"].timestamp() - os.stat(row["uri"]).st_mtime) < 1e-3
    summary = json.loads((cat / "runs" / "r1.json").read_text())
    assert (summary["captioned"], summary["failed"], summary["skipped_unchanged"]) == (18, 0, 0)


def test_duckdb_reads_declared_types(sample_photos, contract_model, tmp_path):
    cat = tmp_path / "cat"
    assert run_cli(copy_photos(sample_photos, tmp_path / "in", 3), "--catalog", cat,
                   "--model", contract_model) == 0
    described = duckdb.sql(
        f"DESCRIBE SELECT * FROM read_parquet('{cat}/catalog/run-*.parquet')").fetchall()
    types = {r[0]: r[1] for r in described}
    assert types == {
        "uri": "VARCHAR", "sha256": "VARCHAR", "size_bytes": "BIGINT",
        "mtime": "TIMESTAMP WITH TIME ZONE", "width": "INTEGER", "height": "INTEGER",
        "format": "VARCHAR", "caption": "VARCHAR", "score": "FLOAT", "captions": "VARCHAR[]",
        "scores": "FLOAT[]", "model_version": "VARCHAR", "run_id": "VARCHAR",
        "processed_at": "TIMESTAMP WITH TIME ZONE", "capture_time": "TIMESTAMP",
        "camera_make": "VARCHAR", "camera_model": "VARCHAR", "existing_alt_text": "VARCHAR",
        "existing_description": "VARCHAR", "caption_status": "VARCHAR",
        "objects": "VARCHAR[]", "keywords": "VARCHAR[]", "keyword_scores": "FLOAT[]",
        "pixels_from": "VARCHAR"}
    err_types = [r[1] for r in duckdb.sql(
        f"DESCRIBE SELECT * FROM read_parquet('{cat}/errors/run-*.parquet')").fetchall()]
    assert err_types == ["VARCHAR"] * 5 + ["TIMESTAMP WITH TIME ZONE"]


def test_multi_processing_runner(sample_photos, contract_model, tmp_path):
    """Workers in other processes: proves every DoFn pickles, as on Dataflow."""
    cat = tmp_path / "cat"
    code = run_cli(copy_photos(sample_photos, tmp_path / "in", 8), "--catalog", cat,
                   "--model", contract_model, "--batch-size", 3,
                   "--direct_running_mode", "multi_processing", "--direct_num_workers", 2)
    assert code == 0
    rows = catalog_rows(cat)
    assert len(rows) == 8 and len({r["uri"] for r in rows}) == 8
    assert all(len(r["captions"]) == 3 for r in rows)


def test_incremental_reruns(sample_photos, contract_model, tmp_path):
    src, cat = copy_photos(sample_photos, tmp_path / "in", 6), tmp_path / "cat"
    args = (src, "--catalog", cat, "--model", contract_model)
    assert run_cli(*args, "--limit", 4) == 0
    assert len(catalog_rows(cat)) == 4
    assert run_cli(*args) == 0                                   # completes the other 2
    rows = catalog_rows(cat)
    assert len(rows) == 6 and len({r["uri"] for r in rows}) == 6
    assert run_cli(*args) == 0                                   # nothing new
    assert len(catalog_rows(cat)) == 6

    files = sorted(src.glob("*.jpg"))
    os.utime(files[0], (time.time(), time.time() + 100))         # touched, same bytes
    with Image.open(files[1]) as im:                             # really changed
        im.rotate(90).save(files[1], "JPEG")
    shutil.copy2(photos(sample_photos)[-1], src / "new.jpg")     # new file
    summary = caption.run([*map(str, args), "--no-progress"])
    assert (summary["captioned"], summary["skipped_unchanged"]) == (2, 5)
    rows = catalog_rows(cat)
    by_uri: dict[str, list] = {}
    for r in rows:
        by_uri.setdefault(r["uri"], []).append(r)
    assert len(by_uri) == 7
    assert len(by_uri[str(files[1])]) == 2                       # superseded, not duplicated
    assert all(len(v) == 1 for k, v in by_uri.items() if k != str(files[1]))
    newest = max(by_uri[str(files[1])], key=lambda r: r["processed_at"])
    assert newest["sha256"] == hashlib.sha256(files[1].read_bytes()).hexdigest()

    forced = caption.run([*map(str, args), "--no-progress", "--force"])
    assert forced["captioned"] == 7 and forced["skipped_unchanged"] == 0


def test_rerun_after_partial_run_has_no_duplicates(sample_photos, contract_model, tmp_path):
    """Leftovers of a killed run (Beam temp shards) are never read as catalog rows."""
    src, cat = copy_photos(sample_photos, tmp_path / "in", 5), tmp_path / "cat"
    args = (src, "--catalog", cat, "--model", contract_model)
    assert run_cli(*args, "--limit", 2) == 0
    # What a run killed before finalize leaves: a temp folder with unfinalized shards.
    temp = cat / "catalog" / "beam-temp-run-killed-0123456789abcdef"
    temp.mkdir()
    shutil.copy(glob.glob(f"{cat}/catalog/run-*.parquet")[0], temp / "0001.parquet")
    (temp / "0002.parquet").write_bytes(b"PAR1 partial")
    assert run_cli(*args) == 0
    rows = catalog_rows(cat)
    assert sorted(r["uri"] for r in rows) == sorted(str(p) for p in src.glob("*.jpg"))


def test_killed_run_then_rerun_completes_catalog(sample_photos, contract_model, tmp_path):
    """SIGKILL a real run while it writes; the next run completes with one row per image."""
    src, cat = copy_photos(sample_photos, tmp_path / "in"), tmp_path / "cat"
    cmd = [sys.executable, "-m", "altbeam.pipelines.caption.pipeline", str(src), "--catalog", str(cat),
           "--model", str(contract_model), "--batch-size", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)

    def shards_being_written() -> int:  # the one sign of progress outside it (for ~0.2 s)
        return len(glob.glob(f"{cat}/catalog/beam-temp-*/*"))

    kill_mid_run(proc, shards_being_written, at_least=1)
    assert shards_being_written() and not glob.glob(f"{cat}/catalog/run-*.parquet"), (
        "the kill should land before the catalog shard is finalized")
    assert run_cli(src, "--catalog", cat, "--model", contract_model) == 0
    uris = [r["uri"] for r in catalog_rows(cat)]
    assert sorted(uris) == sorted(str(p) for p in src.glob("*.jpg"))


def test_mixed_good_and_bad_files(sample_photos, contract_model, tmp_path):
    src, cat = copy_photos(sample_photos, tmp_path / "in", 2), tmp_path / "cat"
    for name, data in good_files().items():
        (src / name).write_bytes(data)
    bad = bad_files()
    (src / "sub").mkdir()
    for name, (data, _) in bad.items():
        (src / "sub" / name).write_bytes(data)
    (src / "notes.txt").write_text("not an image, not listed")
    big = src / "big.png"
    Image.new("RGB", (600, 600), (1, 2, 3)).save(big, "PNG", compress_level=0)
    outside = tmp_path / "outside.jpg"
    shutil.copy(photos(sample_photos)[3], outside)
    (src / "link_out.jpg").symlink_to(outside)
    shutil.copy(photos(sample_photos)[4], src / "target.jpg")
    (src / "link_in.jpg").symlink_to(src / "target.jpg")        # stays inside the root

    summary = caption.run([str(src), "--catalog", str(cat), "--model", str(contract_model),
                           "--max-file-size", "500KB", "--no-progress"])
    assert summary["exit_code"] == 0
    good = {f"{src}/{n}" for n in good_files()} | {str(p) for p in src.glob("0*.jpg")}
    good |= {f"{src}/target.jpg", f"{src}/link_in.jpg"}
    rows = catalog_rows(cat)
    assert sorted(r["uri"] for r in rows) == sorted(good)
    by_uri = {r["uri"]: r for r in rows}
    assert (by_uri[f"{src}/orientation6.jpg"]["width"],
            by_uri[f"{src}/orientation6.jpg"]["height"]) == (20, 40)
    assert by_uri[f"{src}/animated.gif"]["format"] == "GIF"

    errors = {r["uri"]: r for r in error_rows(cat)}
    expected = {f"{src}/sub/{n}": ("decode", t) for n, (_, t) in bad.items()}
    expected[str(big)] = ("list", "too_large")
    expected[f"{src}/link_out.jpg"] = ("list", "symlink_outside_root")
    assert {u: (e["stage"], e["error_type"]) for u, e in errors.items()} == expected
    for uri, err in errors.items():
        assert uri in err["message"] and err["run_id"] == summary["run_id"]
    # Awkward but good files too small or uniform to describe are catalogued uncaptioned.
    held = {u for u, r in by_uri.items() if r["caption_status"] in ("too_small", "blank")}
    assert all(by_uri[u]["caption"] is None and by_uri[u]["captions"] == [] for u in held)
    assert all(by_uri[u]["caption"] for u in good - held)
    assert summary["failed"] == len(expected)
    assert (summary["captioned"], summary["no_caption"]) == (len(good) - len(held), len(held))

    # --follow-symlinks lets the outside link through (new run: only that file is new).
    followed = caption.run([str(src), "--catalog", str(cat), "--model", str(contract_model),
                            "--max-file-size", "500KB", "--no-progress", "--follow-symlinks"])
    assert followed["captioned"] == 1


def test_inputs_from_list_file_and_glob(sample_photos, contract_model, tmp_path):
    listed = photos(sample_photos)[:2]
    list_file = tmp_path / "list.txt"
    list_file.write_text("# two photos\n" + "\n".join(listed) + "\n\n")
    cat = tmp_path / "cat"
    glob_input = f"{sample_photos}/0000000005*.jpg"
    assert run_cli(f"@{list_file}", glob_input, "--catalog", cat,
                   "--model", contract_model) == 0
    expected = set(listed) | set(glob.glob(glob_input))
    assert {r["uri"] for r in catalog_rows(cat)} == expected


def test_exit_codes(contract_model, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(empty, "--catalog", tmp_path / "c1", "--model", contract_model) == 1
    assert "no images found" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"")
    assert run_cli(broken, "--catalog", tmp_path / "c2", "--model", contract_model) == 1
    assert "every input failed" in capsys.readouterr().err
    assert run_cli(broken, "--catalog", tmp_path / "c3", "--model", tmp_path / "nope") == 2
    assert "saved_model.pb missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        caption.main(["--catalog", str(tmp_path / "c4")])
    assert e.value.code == 2


def test_progress_lines_and_summary(sample_photos, contract_model, tmp_path):
    src = copy_photos(sample_photos, tmp_path / "in", 4)
    proc = subprocess.run(
        [sys.executable, "-m", "altbeam.pipelines.caption.pipeline", str(src), "--catalog",
         str(tmp_path / "cat"), "--model", str(contract_model), "--progress-interval", "0.2"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "altbeam: 4/4 images  captioned 4" in proc.stderr
    assert "captioned 4 (ok 4, unsure 0, contradicted 0), skipped unchanged 0, failed 0" in (
        proc.stderr)


def test_listing_symlink_policy_and_cycles(sample_photos, tmp_path):
    from altbeam.pipelines.caption.sources import ExpandInput, FileRecord, ListError

    root = copy_photos(sample_photos, tmp_path / "root", 1)
    outside = copy_photos(sample_photos, tmp_path / "outside", 2)
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)       # a cycle

    def listed(follow):
        fn = ExpandInput(follow_symlinks=follow)
        fn.setup()
        out = list(fn.process(str(root)))
        return ({o.uri for o in out if isinstance(o, FileRecord)},
                {o.uri for o in out if not isinstance(o, FileRecord)})

    files, errors = listed(False)
    assert files == {str(p) for p in root.glob("*.jpg")} and not errors
    files, errors = listed(True)              # follows the folder link, once; no loop
    assert len(files) == 3 and not errors
    missing = ExpandInput()
    missing.setup()
    out = list(missing.process(str(tmp_path / "nope")))
    assert len(out) == 1 and isinstance(out[0].value, ListError)
    assert out[0].value.error_type == "not_found"


def test_write_metadata_end_to_end(sample_photos, contract_model, tmp_path, capsys):
    """--write-metadata: caption, then the same run writes the alt text into the files."""
    import json as _json

    src, cat = tmp_path / "in", tmp_path / "cat"
    src.mkdir()
    for p in photos(sample_photos)[:3]:
        (src / os.path.basename(p)).write_bytes(open(p, "rb").read())   # writable copies
    with Image.open(photos(sample_photos)[3]) as im:
        im.convert("RGB").save(src / "old.bmp", "BMP")                   # not writable
    args = [src, "--catalog", cat, "--model", contract_model, "--write-metadata",
            "--xmp-description", "--run-id", "wm1"]
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    assert run_cli(*args) == 0
    assert "metadata: written 3, skipped 1, failed 0" in capsys.readouterr().err
    rows = {os.path.basename(r["uri"]): r for r in catalog_rows(cat)}
    assert len(rows) == 4
    out = subprocess.run(["exiftool", "-j", "-G1", "-n", *sorted(map(str, src.iterdir()))],
                         capture_output=True, check=True)
    tags = {os.path.basename(t["SourceFile"]): t for t in _json.loads(out.stdout)}
    for name, row in rows.items():
        if name == "old.bmp":
            assert "XMP-iptcCore:AltTextAccessibility" not in tags[name]
            assert hashlib.sha256((src / name).read_bytes()).hexdigest() == before[name]
            continue
        assert tags[name]["XMP-iptcCore:AltTextAccessibility"] == row["caption"]
        assert tags[name]["XMP-dc:Description"] == row["caption"]
        assert tags[name]["XMP-altbeam:RunId"] == "wm1"
    log = duckdb.sql(f"SELECT uri, action, run_id FROM read_parquet('{cat}/writeback/run-*.parquet')"
                     ).fetchall()
    assert sorted((os.path.basename(u), a, r) for u, a, r in log) == [
        (n, "skipped" if n == "old.bmp" else "written", "wm1") for n in sorted(rows)]
    # Incremental: nothing new, nothing captioned, nothing written again.
    again = caption.run([*map(str, args[:-2]), "--no-progress"])
    assert (again["captioned"], again["writeback"]) == (0, {})
    # Writeback options without --write-metadata are a usage error.
    with pytest.raises(SystemExit) as e:
        caption.main([str(src), "--catalog", str(cat), "--min-score", "-1"])
    assert e.value.code == 2
