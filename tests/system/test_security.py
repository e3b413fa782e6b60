"""Issue #11: an untrusted archive (names, bytes, metadata, derived captions) through the
real CLI: caption -> writeback -> report (headless Chromium) -> search/query; paths,
run ids, sidecars; credentials kept out of errors, decisions, the report and logs.

Defences and the tests that prove them: docs/security.md.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from altbeam.pipelines import cli
from altbeam.pipelines.catalog.beam_io import read_table_rows
from altbeam.pipelines.writeback.files import sidecar_path
from altbeam.pipelines.writeback.items import Skip
from altbeam.schemas import ERRORS_SCHEMA
from tests.support import contract_fixture
from tests.support.browser import Browser, chromium_or_skip

needs_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool missing")

HOSTILE_NAMES = ["-delete_original!.jpg", "-@ x.jpg", "-overwrite_original_in_place.jpg",
                 "new\nline.jpg", "<img src=x onerror=alert(1)>.jpg",
                 "'; DROP TABLE catalog; --.jpg", " #lead.jpg"]
BROKEN_NAME = "<b>broken<%b><script>alert(3)<%script>.jpg"
# The model's vocabulary: every caption ("a <word> in a picture") is hostile.
HOSTILE_WORDS = ["</script><script>alert(2)</script>", "-overwrite_original\n-@ /etc/passwd x=y",
                 "<x:xmpmeta>&amp; $HOME @x = -TAG", "'; DROP TABLE catalog; --"]

SIG = "9c4e2b7a" * 8
TOKEN = "ya29.c.b0Aaekm1K" + "Q" * 40
SECRETS = (SIG, TOKEN, "hunter2", "alice")


def sha(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def exif_tags(path) -> dict:
    out = subprocess.run(["exiftool", "-j", "-G1", "-a", os.path.abspath(path)],
                         capture_output=True, check=True).stdout
    return json.loads(out)[0]


def tree(folder) -> dict:
    return {str(p): sha(p) for p in sorted(pathlib.Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory) -> pathlib.Path:
    """The contract fixture with a hostile vocabulary (captions are derived, untrusted)."""
    path = tmp_path_factory.mktemp("models") / "hostile"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(contract_fixture, "WORDS", HOSTILE_WORDS)
        contract_fixture.build_contract_model(str(path), beams=3, version="hostile-0")
    return path


@pytest.fixture(scope="module")
def browser():
    with Browser(chromium_or_skip()) as b:
        yield b


def altbeam(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


# --- the whole chain, one hostile archive --------------------------------------------

@needs_exiftool
def test_hostile_archive_through_caption_writeback_report_search(
        sample_photos, hostile_model, browser, tmp_path, capsys):
    archive, outside, cat = tmp_path / "archive", tmp_path / "outside", tmp_path / "cat"
    archive.mkdir()
    outside.mkdir()
    photos = sorted(sample_photos.glob("*.jpg"))
    for i, name in enumerate(HOSTILE_NAMES):
        shutil.copyfile(photos[i], archive / name)
    (archive / BROKEN_NAME).write_bytes(b"\xff\xd8 not really a jpeg")
    shutil.copyfile(photos[10], outside / "private.jpg")
    (archive / "escape.jpg").symlink_to(outside / "private.jpg")   # leads out of the root
    listing, outside_before = sorted(os.listdir(archive)), tree(outside)

    # caption: every hostile name is catalogued under its exact path
    status, _, err = altbeam(capsys, "caption", archive, "--catalog", cat, "--model",
                             hostile_model, "--batch-size", "4", "--no-progress")
    assert status == 0, err
    rows = {r["uri"]: r for r in read_table_rows(str(cat), "catalog")}
    assert set(rows) == {str(archive / n) for n in HOSTILE_NAMES}
    assert all(r["caption"].removeprefix("a ").removesuffix(" in a picture") in HOSTILE_WORDS
               for r in rows.values())
    errors = {pathlib.Path(e["uri"]).name: e for e in read_table_rows(str(cat), "errors")}
    assert errors["escape.jpg"]["error_type"] == "symlink_outside_root"
    assert errors[BROKEN_NAME]["stage"] == "decode"

    # writeback: each file gets exactly its caption, verbatim; nothing else is touched
    status, _, err = altbeam(capsys, "writeback", cat, "--exif-description", "--quiet")
    assert status == 0, err
    decisions = read_table_rows(str(cat), "writeback")
    assert sorted(d["action"] for d in decisions) == ["written"] * len(HOSTILE_NAMES)
    for uri, row in rows.items():
        t = exif_tags(uri)
        assert t["XMP-iptcCore:AltTextAccessibility"] == row["caption"], uri
        assert t["IFD0:ImageDescription"] == row["caption"]
        assert t["XMP-altbeam:Caption"] == row["caption"]
    assert sorted(os.listdir(archive)) == listing        # nothing deleted, renamed, added
    assert tree(outside) == outside_before               # the symlink target untouched

    # report: names, captions and error messages are text in a real browser
    out = tmp_path / "report.html"
    status, _, err = altbeam(capsys, "report", cat, "--out", out)
    assert status == 0, err
    browser.open(out.as_uri())
    state = browser.evaluate("""({
        text: document.body.innerText,
        content: document.body.textContent,
        scripts: document.scripts.length,
        alts: Array.from(document.querySelectorAll('#grid img')).map(i => i.alt),
        stray: document.querySelectorAll(
            'img:not([src^="data:"]), figcaption b, td b, x\\\\:xmpmeta').length})""")
    assert state["scripts"] == 1 and state["stray"] == 0
    assert browser.problems() == []                      # no script ran, no console error
    assert sorted(state["alts"]) == sorted(r["caption"] for r in rows.values())
    for name in HOSTILE_NAMES[:3] + HOSTILE_NAMES[4:6] + [BROKEN_NAME]:
        assert name in state["text"], name
    shown = {c for r in rows.values() for c in r["captions"]}  # best and alternatives
    assert len({c.split(" ", 1)[1] for c in shown}) >= 3          # most of the vocabulary
    for text in shown:
        assert text in state["content"], text

    # search/query: hostile words are searched for, never executed
    before = tree(cat)
    status, out_json, err = altbeam(capsys, "search", cat, "'; DROP TABLE catalog; --",
                                    "--camera", "' OR 1=1 --", "--format", "json")
    assert status == 0 and json.loads(out_json) == [], err   # no camera holds that text
    status, out_json, err = altbeam(capsys, "search", cat, "'; DROP TABLE catalog; --",
                                    "--format", "json")
    found = json.loads(out_json)
    assert status == 0 and found and all(set(r["matched"]) <= {"drop", "table", "catalog"}
                                         for r in found)
    status, out_json, _ = altbeam(capsys, "query", cat, "SELECT count(*) AS n FROM catalog",
                                  "--format", "json")
    assert status == 0 and json.loads(out_json) == [{"n": len(HOSTILE_NAMES)}]
    assert tree(cat) == before                           # search/query wrote nothing


# --- SQL: read-only even through EXPLAIN ANALYZE ---------------------------------------

@pytest.mark.parametrize("sql", [
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
    "EXPLAIN (ANALYZE) COPY (SELECT * FROM catalog) TO '{cat}/catalog/run-x-00000-of-00001.parquet'",
    "explain /* c */ analyse -- c\n COPY catalog_history TO '{tmp}/dump.csv'",
    "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
])
def test_explain_analyze_cannot_smuggle_a_write(sql, tmp_path, sample_photos, capsys):
    from tests.pipelines.query.test_query import make_catalog

    cat = make_catalog(tmp_path / "cat", sorted(sample_photos.glob("*.jpg"))[:4])
    before = tree(tmp_path)
    status, _, err = altbeam(capsys, "query", cat, sql.format(cat=cat, tmp=tmp_path))
    assert status == 2 and "read-only" in err, err
    assert tree(tmp_path) == before
    status, out, _ = altbeam(capsys, "query", cat, "EXPLAIN ANALYZE SELECT count(*) FROM catalog")
    assert status == 0 and "analyzed_plan" in out


# --- paths: run ids and sidecar names ---------------------------------------------------

@pytest.mark.parametrize("run_id", ["../../escape", "/tmp/abs", "a/b", "..", ".hidden",
                                    "x\ny", "a" * 129])
def test_run_ids_cannot_name_files_outside_the_catalog(run_id, tmp_path, sample_photos, capsys):
    from altbeam.pipelines.writeback import pipeline as writeback

    cat = tmp_path / "deep" / "cat"
    for command in (["caption", sample_photos, "--catalog", cat, "--model", tmp_path],
                    ["writeback", cat], ["caption", sample_photos, f"--catalog={cat}",
                                         "--model", tmp_path]):
        status, _, err = altbeam(capsys, *command, "--run-id", run_id)
        assert status == 2 and "--run-id" in err, err
    assert writeback.main([str(cat), "--run-id", run_id]) == 2     # not only via the CLI
    assert list(tmp_path.rglob("*")) == []                         # nothing created anywhere


@pytest.mark.parametrize("run_id", ["../x", "a/../../b", "/abs"])
def test_run_ids_are_checked_past_the_cli(run_id, tmp_path, sample_photos, contract_model):
    """The Python API and each writer refuse a bad run id too: catalog_io names every
    file a run writes (shard_prefix, run_summary_path) and checks the id there."""
    import apache_beam as beam

    from altbeam.pipelines.caption import pipeline as caption
    from altbeam.pipelines.caption.inference import ModelInfo
    from altbeam.pipelines.catalog import beam_io as catalog_io
    from altbeam.pipelines.writeback import pipeline as writeback
    from altbeam.pipelines.writeback.options import WritebackOptions

    cat = tmp_path / "deep" / "cat"
    with pytest.raises(caption.CaptionUsageError, match="--run-id"):
        caption.run([str(sample_photos), "--catalog", str(cat), "--model",
                     str(contract_model), "--run-id", run_id, "--no-progress"])
    assert caption.main([str(sample_photos), "--catalog", str(cat), "--model",
                         str(contract_model), "--run-id", run_id]) == 2
    config = caption.CaptionConfig(inputs=[str(sample_photos)], catalog=str(cat),
                                   model=str(contract_model), run_id=run_id,
                                   writeback=WritebackOptions(run_id=run_id))
    model = ModelInfo(path=str(contract_model), image_size=32, beam_width=3, version="v")
    with pytest.raises(ValueError, match="--run-id"):
        caption.build(beam.Pipeline(), config, model)
    with pytest.raises(ValueError, match="--run-id"):
        writeback.build(beam.Pipeline(), str(cat), WritebackOptions(run_id=run_id))
    for make in (lambda: catalog_io.WriteTable(str(cat), "errors", run_id),
                 lambda: writeback.WriteWritebackLog(str(cat), run_id),
                 lambda: catalog_io.run_summary_path(str(cat), run_id),
                 lambda: catalog_io.write_run_summary(
                     None, catalog=str(cat), run_id=run_id, started_at=0.0, config={},
                     statuses={}, unchanged=0, failed=0, catalog_files=[], error_files=[])):
        with pytest.raises(ValueError, match="--run-id"):
            make()
    assert list(tmp_path.rglob("*")) == []                         # nothing created anywhere


def test_good_run_ids_pass():
    for run_id in ("20261124T091630Z-3fa2c1", "r1", "nightly.2026-01-01_a"):
        assert cli.check_run_id(run_id) == run_id


@pytest.mark.parametrize("uri,naming,expected", [
    ("/p/a.jpg", "ext", "/p/a.jpg.xmp"),
    ("/p/a.jpg", "stem", "/p/a.xmp"),
    ("/p/../../etc/passwd", "ext", "/p/../../etc/passwd.xmp"),   # the image's own folder
    ("/p/..jpg", "stem", "/p/..jpg.xmp"),
    ("/p/.hidden", "stem", "/p/.hidden.xmp"),
    ("gs://b/x/../y.tif", "stem", "gs://b/x/../y.xmp"),
])
def test_sidecar_names_stay_beside_the_image(uri, naming, expected):
    side = sidecar_path(uri, naming)
    assert side == expected
    assert side.rsplit("/", 1)[0] == uri.rsplit("/", 1)[0]


@pytest.mark.parametrize("uri", ["/p/..", "/p/.", "/p/", "gs://b/x/.."])
def test_sidecar_of_a_nameless_path_is_refused(uri):
    with pytest.raises(Skip, match="bad_name"):
        sidecar_path(uri, "ext")


# --- credentials -------------------------------------------------------------------------

def test_credentials_stay_out_of_errors_report_and_logs(sample_photos, contract_model,
                                                        tmp_path, capsys, caplog):
    photos, cat = tmp_path / "photos", tmp_path / "cat"
    photos.mkdir()
    shutil.copyfile(sorted(sample_photos.glob("*.jpg"))[0], photos / "ok.jpg")
    signed = (f"https://alice:hunter2@storage.example.com/b/a.jpg?X-Goog-Credential=svc"
              f"&X-Goog-Signature={SIG}&access_token={TOKEN}")
    with caplog.at_level(logging.WARNING):
        status, out, err = altbeam(capsys, "caption", photos, signed, "--catalog", cat,
                                   "--model", contract_model, "--no-progress")
        logging.getLogger("google.auth").warning("token refresh: Bearer %s", TOKEN)
    assert status == 0, err
    (error,) = read_table_rows(str(cat), "errors")
    assert error["stage"] == "list" and "storage.example.com/b/a.jpg" in error["uri"]
    assert "[REDACTED]" in error["uri"] + error["message"]
    # A catalog written by an older version (or another tool) with a raw secret in it:
    pq.write_table(pa.Table.from_pylist([dict(
        uri=f"gs://b/c.jpg?X-Goog-Signature={SIG}", stage="read", error_type="Forbidden",
        message=f"403 GET https://storage.googleapis.com/b/c.jpg: Authorization: Bearer {TOKEN}",
        run_id="old", occurred_at=dt.datetime.now(dt.UTC))], schema=ERRORS_SCHEMA),
        cat / "errors" / "run-old-00000-of-00001.parquet")
    report = tmp_path / "report.html"
    status, _, err2 = altbeam(capsys, "report", cat, "--out", report)
    page = report.read_text(encoding="utf-8")
    assert status == 0 and "storage.example.com/b/a.jpg" in page and "gs://b/c.jpg" in page
    seen = {"errors table": json.dumps(error, default=str), "report": page,
            "stdout/stderr": out + err + err2, "logs": caplog.text}
    for where, text in seen.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret[:12]}… in the {where}"


def test_run_summary_holds_no_credentials(sample_photos, contract_model, tmp_path, capsys):
    photos, cat = tmp_path / "photos", tmp_path / "cat"
    photos.mkdir()
    shutil.copyfile(sorted(sample_photos.glob("*.jpg"))[0], photos / "ok.jpg")
    signed = f"https://alice:hunter2@h/a.jpg?X-Goog-Signature={SIG}&access_token={TOKEN}"
    status, _, err = altbeam(capsys, "caption", photos, signed, "--catalog", cat,
                             "--model", contract_model, "--no-progress")
    assert status == 0, err
    (summary,) = (cat / "runs").glob("*.json")
    text = summary.read_text()
    for secret in SECRETS:
        assert secret not in text, secret[:12]
    inputs = json.loads(text)["inputs"]
    assert inputs[0] == str(photos) and "h/a.jpg" in inputs[1] and "[REDACTED]" in inputs[1]


@needs_exiftool
def test_gcs_error_with_bearer_token_fails_one_file_redacted(sample_photos):
    """A 403 whose text echoes the request's Authorization header (as some HTTP errors
    do): the object fails alone and the decision's reason carries no token. The client
    is a stand-in for the error only; GcsObjects and the Annotator are the real ones."""
    from google.api_core.exceptions import Forbidden

    from altbeam.pipelines.writeback.exiftool_session import ExifToolSession
    from altbeam.pipelines.writeback.files import Annotator
    from altbeam.pipelines.writeback.gcs import GcsObjects
    from altbeam.pipelines.writeback.options import WritebackOptions

    class ForbiddenBucket:
        def get_blob(self, name):
            raise Forbidden(f"GET https://storage.googleapis.com/storage/v1/b/bk/o/{name}"
                            f"?access_token={TOKEN}: Authorization: Bearer {TOKEN} denied")

    class Client:
        def bucket(self, name):
            return ForbiddenBucket()

    row = {"uri": "gs://bk/a.jpg", "caption": "a dog", "score": -0.5, "format": "JPEG",
           "sha256": "0" * 64, "model_version": "m"}
    with ExifToolSession(timeout=30) as session:
        annotator = Annotator(WritebackOptions(run_id="s1"), session, GcsObjects(Client()))
        try:
            (decision,) = annotator.annotate([row])
        finally:
            annotator.close()
    assert decision["action"] == "failed"
    assert decision["reason"].startswith("unreadable: gs://bk/a.jpg: cannot download: Forbidden")
    assert TOKEN not in decision["reason"] and "[REDACTED]" in decision["reason"]
