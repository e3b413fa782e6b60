"""The caption gate in the writeback (--include-status) and the catalog's keywords in the
photos (--keywords): real exiftool on real files, real Beam runs.

The catalogs carry the v2 columns (caption_status, keywords) set by each test; the
photos come from tests/pipelines/writeback/support.py.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from altbeam.pipelines.writeback import pipeline as writeback
from altbeam.pipelines.writeback.exiftool_session import ExifToolSession
from altbeam.pipelines.writeback.files import Annotator
from altbeam.pipelines.writeback.options import WritebackOptions
from altbeam.pipelines.writeback.rules import (
    RECORDED_KEYWORDS,
    as_list,
    keywords_to_record,
    pixel_frames,
    wrong_keywords,
)
from tests.pipelines.writeback.support import (
    CAPTION,
    annotate,
    catalog,
    catalog_row,
    exiftool_set,
    photo,
    run,
    sha,
    tags,
)

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool missing")

ALT, SUBJECT, KEYWORDS = "XMP-iptcCore:AltTextAccessibility", "XMP-dc:Subject", "IPTC:Keywords"
RECORD = RECORDED_KEYWORDS    # the record of the keywords altbeam added
NO_CAPTION = {"caption": None, "score": None}


def photo_with_keywords(sample_photos, folder, name, index=0):
    """A JPEG a person has already given keywords, in XMP and in IPTC."""
    path = photo(sample_photos, folder, name, index=index)
    exiftool_set(path, "-XMP-dc:Subject=Dog", "-XMP-dc:Subject=Paris, France",
                 "-IPTC:Keywords=dog", "-IPTC:Keywords=Paris")
    return path


# --- the caption gate ----------------------------------------------------------------

def test_only_ok_captions_are_written_unless_include_status_says(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    statuses = {"ok": "ok", "unsure": "unsure", "contra": "contradicted",
                "small": "too_small", "blank": "blank", "old": None}
    paths = {key: photo(sample_photos, folder, f"{key}.jpg", index=i)
             for i, key in enumerate(statuses)}
    columns = {p: {"caption_status": statuses[key], "keywords": ["bear"],
                   **(NO_CAPTION if key in ("small", "blank") else {})}
               for key, p in paths.items()}
    columns[paths["old"]]["keywords"] = None           # a row from before the gate
    cat = catalog(tmp_path, list(paths.values()), columns=columns)
    hashes = {key: sha(p) for key, p in paths.items()}

    result, by_name = run(cat, "--keywords")
    assert result["exit_code"] == 0 and result["counts"] == {"written": 2, "skipped": 4}
    assert len(result["decisions"]) == len(paths)       # every row accounted for
    for key in ("ok", "old"):                           # ok, and not judged: as before
        assert by_name[f"{key}.jpg"]["action"] == "written"
        assert tags(paths[key])[ALT] == CAPTION
    assert as_list(tags(paths["ok"]).get(SUBJECT)) == ["bear"]
    assert SUBJECT not in tags(paths["old"])            # no keywords in its row
    reasons = {key: by_name[f"{key}.jpg"]["reason"] for key in ("unsure", "contra",
                                                               "small", "blank")}
    assert reasons["unsure"].startswith(f"status_unsure: {paths['unsure']}: caption marked "
                                        "unsure by the caption gate")
    assert reasons["unsure"].endswith("; --include-status unsure writes it")
    assert reasons["contra"].startswith("status_contradicted: ")
    assert reasons["contra"].endswith("--include-status contradicted writes it")
    assert reasons["small"].startswith("status_too_small: ") and "no caption" in reasons[
        "small"] and "--include-status" not in reasons["small"]
    assert reasons["blank"].startswith("status_blank: ")
    for key in ("unsure", "contra", "small", "blank"):  # not a byte: keywords neither
        assert by_name[f"{key}.jpg"]["action"] == "skipped"
        assert sha(paths[key]) == hashes[key], key

    result, by_name = run(cat, "--keywords", "--include-status", "unsure")
    assert by_name["unsure.jpg"]["action"] == "written"
    assert tags(paths["unsure"])[ALT] == CAPTION
    assert as_list(tags(paths["unsure"])[SUBJECT]) == ["bear"]
    assert by_name["contra.jpg"]["reason"].startswith("status_contradicted: ")
    assert by_name["ok.jpg"]["reason"].startswith("already_written: ")

    result, by_name = run(cat, "--include-status", "unsure,contradicted")
    assert result["counts"] == {"written": 1, "skipped": 5}
    assert by_name["contra.jpg"]["action"] == "written"
    assert SUBJECT not in tags(paths["contra"])         # no --keywords: none written
    for key in ("small", "blank"):                      # never, whatever is included
        assert by_name[f"{key}.jpg"]["reason"].startswith(f"status_{statuses[key]}: ")
        assert sha(paths[key]) == hashes[key]


@pytest.mark.parametrize("value, message", [
    ("too_small", "'too_small' rows are never written: the image is too small"),
    ("unsure,blank", "'blank' rows are never written: the image is nearly uniform"),
    ("sure", "unknown caption status 'sure'; choose from unsure, contradicted"),
    ("unsure,,", "an empty caption status in 'unsure,,'"),
])
def test_a_bad_include_status_is_a_usage_error(tmp_path, capsys, value, message):
    cat = catalog(tmp_path, [])
    with pytest.raises(SystemExit) as e:
        writeback.main([str(cat), "--include-status", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"altbeam writeback: error: argument --include-status: {message}" in err, err
    assert not (cat / "writeback").exists()             # nothing ran


# --- keywords ------------------------------------------------------------------------

def test_keywords_are_added_beside_a_persons_never_removed_nor_doubled(sample_photos,
                                                                       tmp_path):
    folder = tmp_path / "photos"
    jpeg = photo_with_keywords(sample_photos, folder, "k.jpg")
    png = photo(sample_photos, folder, "k.png", "PNG", index=1)
    exiftool_set(png, "-XMP-dc:Subject=Bear")
    before = {p: tags(p) for p in (jpeg, png)}
    pixels = {p: pixel_frames(str(p)) for p in (jpeg, png)}
    long_word = "x" * 65                                # over IPTC's 64 bytes
    keywords = ["DOG", "bear", "person", "paris", "café", long_word, "Bear"]
    cat = catalog(tmp_path, [jpeg, png], columns={
        p: {"caption_status": "ok", "keywords": keywords,
            "keyword_scores": [0.9] * len(keywords)} for p in (jpeg, png)})

    result, by_name = run(cat, "--keywords")
    assert result["counts"] == {"written": 2}, result["decisions"]
    after = tags(jpeg)
    # a person's keywords first, as they were; the new ones after, once, in catalog order
    assert after[SUBJECT] == ["Dog", "Paris, France", "bear", "person", "paris", "café",
                              long_word]
    assert after[KEYWORDS] == ["dog", "Paris", "bear", "person", "café"]
    assert after["IPTC:CodedCharacterSet"] == "UTF8"    # café is not ASCII
    assert after[ALT] == CAPTION
    d = by_name["k.jpg"]
    assert d["fields"] == [ALT, SUBJECT, KEYWORDS]
    assert "keywords added to XMP-dc:Subject: bear, person, paris, café, x" in d["reason"]
    assert "keywords added to IPTC:Keywords: bear, person, café" in d["reason"]
    assert f"keyword '{long_word[:60]}…' not added to IPTC:Keywords (over 64 bytes)" in d[
        "reason"]
    assert tags(png)[SUBJECT] == ["Bear", "DOG", "person", "paris", "café", long_word]
    # the record of altbeam's keywords: what it added to either list, once; a person's not
    assert as_list(tags(jpeg).get(RECORD)) == ["bear", "person", "paris", "café", long_word]
    assert as_list(tags(png).get(RECORD)) == ["DOG", "person", "paris", "café", long_word]
    assert KEYWORDS not in tags(png)                    # PNG: XMP only, and said so
    assert by_name["k.png"]["fields"] == [ALT, SUBJECT]
    assert "not written (PNG files cannot hold them): IPTC:Keywords" in by_name["k.png"][
        "reason"]
    for p in (jpeg, png):
        assert pixel_frames(str(p)) == pixels[p]        # bit-identical
        for key in ("XMP-dc:Subject", "IPTC:Keywords"):
            old = as_list(before[p].get(key))
            assert as_list(tags(p).get(key))[:len(old)] == old

    hashes = {p: sha(p) for p in (jpeg, png)}           # a re-run adds nothing
    result, by_name = run(cat, "--keywords")
    assert result["counts"] == {"skipped": 2}
    assert all(d["reason"].startswith("already_written") for d in by_name.values())
    assert {p: sha(p) for p in (jpeg, png)} == hashes


def test_keywords_join_an_alt_text_already_written(sample_photos, tmp_path):
    """Without --keywords none are written; a later run with it adds them (and only
    them: the alt text is the same)."""
    p = photo_with_keywords(sample_photos, tmp_path / "photos", "later.jpg")
    cat = catalog(tmp_path, [p], columns={p: {"caption_status": "ok",
                                              "keywords": ["bear"]}})
    run(cat)
    assert tags(p)[SUBJECT] == ["Dog", "Paris, France"] and tags(p)[ALT] == CAPTION
    assert RECORD not in tags(p)
    result, by_name = run(cat, "--keywords", "--dry-run")
    assert by_name["later.jpg"]["action"] == "would_write"
    assert "keywords added to XMP-dc:Subject: bear" in by_name["later.jpg"]["reason"]
    assert tags(p)[SUBJECT] == ["Dog", "Paris, France"]
    result, by_name = run(cat, "--keywords")
    assert by_name["later.jpg"]["action"] == "written", by_name["later.jpg"]["reason"]
    assert tags(p)[SUBJECT] == ["Dog", "Paris, France", "bear"]
    assert tags(p)[KEYWORDS] == ["dog", "Paris", "bear"]
    assert tags(p)[ALT] == CAPTION and as_list(tags(p).get(RECORD)) == ["bear"]
    # A later catalog (another model) with one more keyword: the record grows; what
    # altbeam added before stays recorded, the person's keywords never are.
    cat = catalog(tmp_path, [p], columns={p: {"caption_status": "ok",
                                              "keywords": ["grass", "dog", "bear"]}})
    result, by_name = run(cat, "--keywords")
    assert by_name["later.jpg"]["action"] == "written", by_name["later.jpg"]["reason"]
    assert tags(p)[SUBJECT] == ["Dog", "Paris, France", "bear", "grass"]
    assert as_list(tags(p).get(RECORD)) == ["bear", "grass"]


def test_keywords_in_sidecars_xmp_only(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    new = photo_with_keywords(sample_photos, folder, "new.jpg")
    old = photo(sample_photos, folder, "old.jpg", index=1)
    subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=Bear", "-XMP-dc:Subject=forest",
                    "-o", os.path.abspath(f"{old}.xmp")], check=True)   # a person's sidecar
    hashes = {p: sha(p) for p in (new, old)}
    cat = catalog(tmp_path, [new, old], columns={
        p: {"caption_status": "ok", "keywords": ["bear", "dog"]} for p in (new, old)})

    result, by_name = run(cat, "--sidecar", "--keywords")
    assert result["counts"] == {"written": 2}, result["decisions"]
    # a new sidecar holds what is written (the image's own keywords stay in the image)
    assert tags(f"{new}.xmp")[SUBJECT] == ["bear", "dog"]
    assert tags(f"{old}.xmp")[SUBJECT] == ["Bear", "forest", "dog"]
    assert as_list(tags(f"{old}.xmp").get(RECORD)) == ["dog"]
    for p in (new, old):
        side = tags(f"{p}.xmp")
        assert side[ALT] == CAPTION and KEYWORDS not in side
        assert by_name[p.name]["fields"] == [ALT, SUBJECT]
        assert by_name[p.name]["target"] == f"{p}.xmp"
        assert sha(p) == hashes[p]                      # the images are not touched
    result, _ = run(cat, "--sidecar", "--keywords")
    assert result["counts"] == {"skipped": 2}           # already there


def test_a_failed_write_restores_the_original_keywords_exactly(sample_photos, tmp_path):
    p = photo_with_keywords(sample_photos, tmp_path / "photos", "r.jpg")
    original, before = open(p, "rb").read(), tags(p)
    row = catalog_row(p, caption_status="ok", keywords=["bear", "dog", "café"])

    class PixelsDiffer(Annotator):   # the real write happens; the check is made to fail
        def _verify(self, item, after, target):
            assert super()._verify(item, after, target) is None
            assert after[SUBJECT] == ["Dog", "Paris, France", "bear", "café"]
            return f"verify_failed: {target}: decoded pixels differ after writing"

    with ExifToolSession() as session:
        annotator = PixelsDiffer(WritebackOptions(
            fields=("alt_text", "xmp_keywords", "iptc_keywords"), run_id="t"), session)
        (decision,) = annotator.annotate([row])
        annotator.close()
    assert decision["action"] == "failed", decision
    assert open(p, "rb").read() == original
    after = tags(p)
    for key in (SUBJECT, KEYWORDS, "IPTC:CodedCharacterSet"):
        assert after.get(key) == before.get(key), key
    assert ALT not in after


def test_keyword_lists_are_verified_as_before_plus_added():
    before = {SUBJECT: ["Dog", "Paris"], KEYWORDS: "dog"}
    plan = {"xmp_keywords": ["bear"], "iptc_keywords": ["bear"]}
    right = {SUBJECT: ["Dog", "Paris", "bear"], KEYWORDS: ["dog", "bear"], RECORD: "bear"}
    assert wrong_keywords(before, right, plan) == []
    assert wrong_keywords(before, {**right, SUBJECT: ["bear", "Dog", "Paris"],  # reordered
                                   KEYWORDS: ["bear"]}, plan) == [SUBJECT, KEYWORDS]  # lost
    assert wrong_keywords(before, {**right, RECORD: ["bear", "bear"]}, plan) == [RECORD]
    # Already recorded by an earlier run (a person has since removed it from the list):
    # added to the list again, not recorded twice.
    earlier = {**before, RECORD: ["Bear"]}
    assert keywords_to_record(earlier, plan) == []
    assert wrong_keywords(earlier, {**right, RECORD: "Bear"}, plan) == []


def test_a_lost_log_write_without_the_keywords_asked_for_is_not_already_written(
        sample_photos, tmp_path):
    """A killed run's file counts as already written only when nothing would be written:
    with --keywords, its keywords must be there too."""
    p = photo(sample_photos, tmp_path / "photos", "lost.jpg")
    row = catalog_row(p, caption_status="ok", keywords=["bear"])
    assert annotate([row], run_id="killed")[0]["action"] == "written"   # log never kept
    (d,) = annotate([row], run_id="rerun")
    assert d["reason"].startswith("already_written"), d
    (d,) = annotate([row], run_id="rerun", fields=("alt_text", "xmp_keywords"))
    assert d["reason"].startswith("changed_since_catalogued"), d
