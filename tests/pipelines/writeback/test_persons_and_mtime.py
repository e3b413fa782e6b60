"""Real archives (issue 18): alt text beside a person's caption, modification times kept.

Real exiftool on real JPEGs, real Beam runs; a person's words are compared as the
bytes in the file (Pillow's raw IPTC records, exiftool -b) before and after.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time

import pytest
from PIL import Image, IptcImagePlugin

from altbeam.pipelines.catalog.beam_io import read_table_rows
from altbeam.pipelines.writeback.exiftool_session import ExifToolSession
from altbeam.pipelines.writeback.files import Annotator
from altbeam.pipelines.writeback.options import WritebackOptions
from tests.pipelines.writeback.support import (
    CAPTION,
    catalog,
    catalog_row,
    exiftool_set,
    photo,
    run,
    sha,
    tags,
)

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool missing")

ALT = "XMP-iptcCore:AltTextAccessibility"
# A newsroom caption: IPTC in cp1252 (no CodedCharacterSet, as older tools wrote it)
# and the same words in XMP, with characters that any re-encoding would change.
NEWS = "Bürgermeisterin Ørsted eröffnet die Brücke – Foto: Ann Été"


def iptc_caption_bytes(path) -> bytes:
    """IPTC 2:120 (Caption-Abstract) exactly as stored in the file."""
    with Image.open(path) as im:
        return IptcImagePlugin.getiptcinfo(im)[(2, 120)]


def tag_bytes(path, tag: str) -> bytes:
    return subprocess.run(["exiftool", "-b", f"-{tag}", os.path.abspath(path)],
                          capture_output=True, check=True).stdout


def persons_words(path) -> tuple[bytes, bytes, bytes]:
    return (iptc_caption_bytes(path), tag_bytes(path, "IPTC:Caption-Abstract"),
            tag_bytes(path, "XMP-dc:Description"))


def newsroom_photo(sample_photos, folder, name, index=0):
    path = photo(sample_photos, folder, name, index=index)
    exiftool_set(path, "-charset", "iptc=Latin", f"-IPTC:Caption-Abstract={NEWS}",
                 f"-XMP-dc:Description={NEWS}", "-IPTC:By-line=Ann Été")
    return path


def test_alt_text_is_written_beside_a_persons_caption_which_stays_byte_identical(
        sample_photos, tmp_path):
    news = newsroom_photo(sample_photos, tmp_path / "photos", "news.jpg")
    before = persons_words(news)
    assert before[0] == NEWS.encode("cp1252")                  # exiftool's "Latin": cp1252
    assert tag_bytes(news, "XMP-dc:Description").decode() == NEWS
    cat = catalog(tmp_path, [news])

    result, by_name = run(cat)
    d = by_name["news.jpg"]
    assert result["counts"] == {"written": 1}, d["reason"]
    assert d["fields"] == [ALT]
    assert "a person's text left as it was: " in d["reason"]
    assert "XMP-dc:Description" in d["reason"] and "IPTC:Caption-Abstract" in d["reason"]
    assert tags(news)[ALT] == CAPTION
    assert persons_words(news) == before                              # byte for byte

    again, by_name = run(cat)                                         # nothing new to write
    assert again["counts"] == {"skipped": 1}
    assert by_name["news.jpg"]["reason"].startswith("already_written")
    assert persons_words(news) == before


def test_a_persons_text_in_a_field_being_written_waits_for_overwrite_existing(
        sample_photos, tmp_path):
    folder = tmp_path / "photos"
    alt = photo(sample_photos, folder, "alt.jpg")
    exiftool_set(alt, f"-{ALT}=Two children fly a red kite")
    news = newsroom_photo(sample_photos, folder, "news.jpg", index=1)
    hashes = {p.name: sha(p) for p in (alt, news)}
    iptc_before = iptc_caption_bytes(news)
    cat = catalog(tmp_path, [alt, news])

    _, by_name = run(cat, "--xmp-description")      # both fields hold a person's words
    assert by_name["alt.jpg"]["reason"].startswith(f"existing_text: {alt}: {ALT} already")
    assert "red kite" in by_name["alt.jpg"]["reason"]
    # news.jpg: only the chosen field is in the way, named precisely (not its IPTC caption)
    assert by_name["news.jpg"]["reason"].startswith(
        f"existing_text: {news}: XMP-dc:Description already holds")
    assert {p.name: sha(p) for p in (alt, news)} == hashes

    _, by_name = run(cat)                           # alt text only: news.jpg is free
    assert by_name["alt.jpg"]["reason"].startswith("existing_text")
    assert by_name["news.jpg"]["action"] == "written"
    assert sha(alt) == hashes["alt.jpg"]

    result, by_name = run(cat, "--xmp-description", "--overwrite-existing")
    assert result["counts"] == {"written": 2}, [d["reason"] for d in by_name.values()]
    assert tags(alt)[ALT] == CAPTION
    assert tags(news)["XMP-dc:Description"] == CAPTION              # replaced only now
    assert "replaces a person's text (--overwrite-existing): XMP-dc:Description" in by_name[
        "news.jpg"]["reason"]
    assert "left as it was: IPTC:Caption-Abstract" in by_name["news.jpg"]["reason"]
    assert iptc_caption_bytes(news) == iptc_before                    # not a field written


# --- modification time ----------------------------------------------------------------

OLD_NS = 1_234_567_890_123_456_789          # 2009-02-13, with nanoseconds


def test_modification_time_is_kept_by_default_and_updated_on_request(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    kept, touched, sided = (photo(sample_photos, folder, f"{n}.jpg", index=i)
                            for i, n in enumerate(("kept", "touched", "sided")))
    for p in (kept, touched, sided):
        os.utime(p, ns=(OLD_NS, OLD_NS))
    cat = catalog(tmp_path, [kept])
    start = time.time_ns()
    result, by_name = run(cat)
    assert result["counts"] == {"written": 1}
    assert os.stat(kept).st_mtime_ns == OLD_NS                       # to the nanosecond
    d = by_name["kept.jpg"]
    old = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=OLD_NS // 1000)
    assert d["mtime_before"] == d["mtime_after"] == old
    assert d["sha256_after"] == sha(kept) != d["sha256_before"]

    cat = catalog(tmp_path, [touched], name="cat2")
    _, by_name = run(cat, "--update-mtime")
    assert os.stat(touched).st_mtime_ns >= start
    d = by_name["touched.jpg"]
    assert d["mtime_before"] == old and d["mtime_after"].timestamp() >= start / 1e9 - 1

    # a sidecar gets the time of its write (photo managers notice it by that); the image
    # beside it is not written at all
    cat = catalog(tmp_path, [sided], name="cat3")
    _, by_name = run(cat, "--sidecar")
    d = by_name["sided.jpg"]
    assert d["target"] == f"{sided}.xmp" and d["mtime_before"] is None
    assert os.stat(f"{sided}.xmp").st_mtime_ns >= start
    assert d["mtime_after"].timestamp() >= start / 1e9 - 1
    assert os.stat(sided).st_mtime_ns == OLD_NS
    logged = {r["uri"] for r in read_table_rows(str(cat), "writeback")
              if r["mtime_after"] is not None}
    assert logged == {str(sided)}


def test_a_restored_file_gets_its_time_back_too(sample_photos, tmp_path):
    p = photo(sample_photos, tmp_path / "photos", "v.jpg")
    os.utime(p, ns=(OLD_NS, OLD_NS))
    original = open(p, "rb").read()

    class PixelsDiffer(Annotator):   # the real write happens; the check is made to fail
        def _verify(self, item, after, target):
            return f"verify_failed: {target}: decoded pixels differ after writing"

    for update_mtime in (False, True):
        with ExifToolSession() as session:
            annotator = PixelsDiffer(WritebackOptions(run_id="t", update_mtime=update_mtime),
                                     session)
            (decision,) = annotator.annotate([catalog_row(p)])
            annotator.close()
        assert decision["action"] == "failed"
        assert open(p, "rb").read() == original
        assert os.stat(p).st_mtime_ns == OLD_NS
        assert decision["mtime_after"] is None


def test_a_writeback_log_from_before_the_time_columns_still_reads(sample_photos, tmp_path):
    """Shards written before mtime_before/mtime_after were appended: the chain of own
    writes still reads them, and DuckDB shows their times as null beside new rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from altbeam.pipelines.catalog.api import connect
    from altbeam.schemas import WRITEBACK_SCHEMA
    from tests.pipelines.writeback.support import annotate

    p = photo(sample_photos, tmp_path / "photos", "old.jpg")
    cat = catalog(tmp_path, [p])
    (written,) = annotate([catalog_row(p)], run_id="old")
    assert written["action"] == "written"
    old_schema = pa.schema(list(WRITEBACK_SCHEMA)[:-2], metadata=WRITEBACK_SCHEMA.metadata)
    (cat / "writeback").mkdir()
    pq.write_table(pa.Table.from_pylist([written], schema=old_schema),
                   cat / "writeback" / "run-old-00000-of-00001.parquet")

    result, by_name = run(cat)
    reason = by_name["old.jpg"]["reason"]
    assert reason.startswith("already_written") and "log never reached" not in reason  # chain
    times = dict(connect(str(cat)).execute(
        "SELECT run_id, mtime_before FROM writeback").fetchall())
    assert times["old"] is None and times[result["run_id"]] is not None
