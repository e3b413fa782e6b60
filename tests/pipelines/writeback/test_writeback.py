"""`altbeam writeback`: real exiftool on real JPEG/PNG/TIFF/WebP files, real Beam runs.

The photos and catalogs come from tests/pipelines/writeback/support.py.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from PIL import Image

from altbeam.pipelines.catalog.beam_io import read_table_rows
from altbeam.pipelines.writeback.exiftool_session import ExifToolSession
from altbeam.pipelines.writeback.files import Annotator
from altbeam.pipelines.writeback.options import WritebackOptions
from altbeam.pipelines.writeback.rules import pixel_frames
from altbeam.schemas import WRITEBACK_SCHEMA
from tests.pipelines.writeback.support import (
    CAPTION,
    annotate,
    catalog,
    catalog_row,
    photo,
    run,
    sha,
    tags,
)
from tests.support.kill_mid_run import count_changed, file_state, kill_mid_run, some_but_not_all
from tests.support.paths import REPO

pytest_plugins = ["tests.support.gcs_emulator"]
pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool missing")

KEPT = ["IFD0:Make", "IFD0:Model", "ExifIFD:DateTimeOriginal", "ExifIFD:FNumber",
        "GPS:GPSLatitude", "XMP-dc:Creator", "XMP-xmp:CreatorTool", "XMP-photoshop:Headline"]


def test_writes_every_format_losslessly_and_idempotently(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    paths = [photo(sample_photos, folder, f"p.{ext}", fmt, rich=True, index=i)
             for i, (ext, fmt) in enumerate([("jpg", "JPEG"), ("png", "PNG"),
                                             ("tif", "TIFF"), ("webp", "WEBP")])]
    before = {p.name: tags(p) for p in paths}
    pixels = {p.name: pixel_frames(str(p)) for p in paths}
    cat = catalog(tmp_path, paths)
    result, by_name = run(cat, "--xmp-description", "--exif-description", "--iptc-caption")
    assert result["exit_code"] == 0 and result["counts"] == {"written": 4}
    for p in paths:
        after, d = tags(p), by_name[p.name]
        assert after["XMP-iptcCore:AltTextAccessibility"] == CAPTION
        assert after["XMP-dc:Description"] == CAPTION
        assert after["IFD0:ImageDescription"] == CAPTION
        assert after["XMP-altbeam:Caption"] == CAPTION
        assert after["XMP-altbeam:ModelVersion"] == "m1" and after["XMP-altbeam:Score"] == -0.5
        assert after["XMP-altbeam:Generator"] == "altbeam"
        for key in KEPT + ["ICC_Profile:ProfileDescription"]:
            assert after[key] == before[p.name][key], (p.name, key)
        assert pixel_frames(str(p)) == pixels[p.name]                 # bit-identical
        assert d["sha256_after"] == sha(p) != d["sha256_before"]
        assert not [n for n in os.listdir(folder) if "exiftool_tmp" in n or "altbeam" in n]
    for name in ("p.jpg", "p.tif"):                                   # IPTC: JPEG and TIFF
        after = tags(folder / name)
        assert after["IPTC:Caption-Abstract"] == CAPTION
        assert after["IPTC:CodedCharacterSet"] == "UTF8"
        assert after["IPTC:Keywords"] == before[name]["IPTC:Keywords"]
    assert "IPTC:Caption-Abstract" in by_name["p.webp"]["reason"]     # left out, said why
    assert "IPTC:Caption-Abstract" not in tags(folder / "p.webp")
    log = [r for r in read_table_rows(str(cat), "writeback")]
    assert len(log) == 4 and all(r["run_id"] == result["run_id"] for r in log)
    shard = next((cat / "writeback").glob("run-*.parquet"))
    assert pq.read_schema(shard).equals(WRITEBACK_SCHEMA, check_metadata=False)

    hashes = {p.name: sha(p) for p in paths}                          # re-run: no change
    again, by_name = run(cat, "--xmp-description", "--exif-description", "--iptc-caption")
    assert again["counts"] == {"skipped": 4}
    assert all(d["reason"].startswith("already_written") for d in by_name.values())
    assert {p.name: sha(p) for p in paths} == hashes


def test_person_written_text_is_never_replaced(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    person = photo(sample_photos, folder, "person.jpg")
    subprocess.run(["exiftool", "-q", "-overwrite_original",
                    "-XMP-dc:Description=My grandmother's garden", str(person)], check=True)
    alt = photo(sample_photos, folder, "alt.jpg", index=1)
    subprocess.run(["exiftool", "-q", "-overwrite_original",
                    "-XMP-iptcCore:AltTextAccessibility-de=Ein Hund", str(alt)], check=True)
    camera = photo(sample_photos, folder, "camera.jpg", index=2)
    subprocess.run(["exiftool", "-q", "-overwrite_original",
                    "-ImageDescription=OLYMPUS DIGITAL CAMERA", str(camera)], check=True)
    original_alt = sha(alt)
    cat = catalog(tmp_path, [person, alt, camera])
    result, by_name = run(cat)
    # a person's description is not in the way of the alt text beside it
    assert by_name["person.jpg"]["action"] == "written", by_name["person.jpg"]["reason"]
    assert "a person's text left as it was: XMP-dc:Description" in by_name["person.jpg"][
        "reason"]
    assert tags(person)["XMP-dc:Description"] == "My grandmother's garden"
    assert by_name["alt.jpg"]["reason"].startswith("existing_text")   # alt text in any language
    assert "Ein Hund" in by_name["alt.jpg"]["reason"]
    assert by_name["camera.jpg"]["action"] == "written"               # camera boilerplate
    assert sha(alt) == original_alt

    # A person edits the alt text altbeam wrote: from then on it is theirs.
    subprocess.run(["exiftool", "-q", "-overwrite_original",
                    "-XMP-iptcCore:AltTextAccessibility=A tabby cat asleep", str(camera)],
                   check=True)
    edited = sha(camera)
    _, by_name = run(cat)
    assert by_name["camera.jpg"]["reason"].startswith("changed_since_catalogued")
    catalog(tmp_path, [camera])                  # captioned again: a newer catalog row
    _, by_name = run(cat)
    assert by_name["camera.jpg"]["reason"].startswith("existing_text")
    assert "tabby" in by_name["camera.jpg"]["reason"]
    assert sha(camera) == edited

    _, by_name = run(cat, "--overwrite-existing")
    assert by_name["alt.jpg"]["action"] == "written", by_name["alt.jpg"]["reason"]
    after = tags(alt)            # ours is the x-default entry; the German one stays
    assert after["XMP-iptcCore:AltTextAccessibility"] == CAPTION
    assert after["XMP-iptcCore:AltTextAccessibility-de"] == "Ein Hund"
    assert by_name["camera.jpg"]["action"] == "written"
    assert "replaces a person's text (--overwrite-existing): XMP-iptcCore:AltTextAccessibility" \
        in by_name["camera.jpg"]["reason"]
    assert tags(person)["XMP-dc:Description"] == "My grandmother's garden"  # not our field


def test_dry_run_min_score_and_changed_files(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    paths = [photo(sample_photos, folder, f"{i}.jpg", index=i) for i in range(3)]
    cat = catalog(tmp_path, paths[:2], score=-0.4)
    catalog(tmp_path, paths[2:], score=-3.0)       # a second shard, low score
    hashes = {p.name: sha(p) for p in paths}
    result, by_name = run(cat, "--dry-run", "--min-score", "-1")
    assert {p.name: sha(p) for p in paths} == hashes                  # touched nothing
    assert [by_name[n]["action"] for n in ("0.jpg", "1.jpg", "2.jpg")] == [
        "would_write", "would_write", "skipped"]
    assert by_name["2.jpg"]["reason"].startswith("below_min_score")
    assert sorted(os.listdir(folder)) == ["0.jpg", "1.jpg", "2.jpg"]  # no sidecar, no temp

    with open(paths[0], "ab") as f:                                  # changed after cataloguing
        f.write(b"\0")
    changed = sha(paths[0])
    _, by_name = run(cat, "--min-score", "-1")
    assert by_name["0.jpg"]["reason"].startswith("changed_since_catalogued")
    assert sha(paths[0]) == changed
    assert by_name["1.jpg"]["action"] == "written"


def test_read_only_files_and_folders(sample_photos, tmp_path):
    ro_file = photo(sample_photos, tmp_path / "a", "ro.jpg")
    os.chmod(ro_file, 0o444)
    ro_dir_file = photo(sample_photos, tmp_path / "b", "in_ro_dir.jpg", index=1)
    immutable = photo(sample_photos, tmp_path / "c", "immutable.jpg", index=2)
    can_chattr = subprocess.run(["chattr", "+i", str(immutable)],
                                capture_output=True).returncode == 0
    cat = catalog(tmp_path, [ro_file, ro_dir_file, immutable])
    os.chmod(tmp_path / "b", 0o555)
    hashes = {p.name: sha(p) for p in (ro_file, ro_dir_file, immutable)}
    try:
        result, by_name = run(cat)
    finally:
        os.chmod(tmp_path / "b", 0o755)
        if can_chattr:
            subprocess.run(["chattr", "-i", str(immutable)], check=True)
    assert by_name["ro.jpg"]["reason"].startswith("read_only_file")
    assert by_name["in_ro_dir.jpg"]["reason"].startswith("read_only_folder")
    if can_chattr:   # root bypasses mode bits but not the immutable flag; access() says so
        assert by_name["immutable.jpg"]["reason"].startswith("read_only_file")
        assert "immutable.jpg" in by_name["immutable.jpg"]["reason"]
        assert not list((tmp_path / "c").glob("*exiftool_tmp*"))
    assert {p.name: sha(p) for p in (ro_file, ro_dir_file, immutable)} == hashes


INJECTION_NAMES = ["-delete_original!.jpg", "-@ x.jpg", "-overwrite_original_in_place.jpg",
                   "new\nline.jpg", "-execute.jpg", "#x.jpg", " lead.jpg"]


def test_injection_names_and_captions_verbatim(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    paths = [photo(sample_photos, folder, n, index=i) for i, n in enumerate(INJECTION_NAMES)]
    bystander = photo(sample_photos, tmp_path / "elsewhere", "x.jpg")
    captions = {p: f"line one\n-overwrite_original\n  -@ /etc/passwd = <x:xmpmeta>&</x> {i}"
                for i, p in enumerate(paths)}
    cat = catalog(tmp_path, paths, caption=captions)
    listing, untouched = sorted(os.listdir(folder)), sha(bystander)
    result, by_name = run(cat, "--exif-description")
    assert result["counts"] == {"written": len(paths)}
    for p in paths:
        t = tags(p)
        assert t["XMP-iptcCore:AltTextAccessibility"] == captions[p], p.name
        assert t["IFD0:ImageDescription"] == captions[p]
    assert sorted(os.listdir(folder)) == listing                      # nothing added/deleted
    assert sha(bystander) == untouched


def test_unicode_and_long_captions(sample_photos, tmp_path):
    p = photo(sample_photos, tmp_path / "photos", "u.jpg")
    caption = "Ünïcödé 猫が寝ている 🐈 " * 150                         # ~5 kB of UTF-8
    cat = catalog(tmp_path, [p], caption=caption)
    result, _ = run(cat, "--iptc-caption")
    assert result["counts"] == {"written": 1}
    t = tags(p)
    assert t["XMP-iptcCore:AltTextAccessibility"] == caption
    iptc = t["IPTC:Caption-Abstract"]
    assert len(iptc.encode("utf-8")) <= 2000 and caption.startswith(iptc)
    assert len(iptc.encode("utf-8")) > 1990                            # cut at a char edge
    again, _ = run(cat, "--iptc-caption")
    assert again["counts"] == {"skipped": 1}                           # truncation is ours


def test_sidecars(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    jpg = photo(sample_photos, folder, "a.jpg")
    png = photo(sample_photos, folder, "a.png", "PNG", index=1)
    bmp = photo(sample_photos, folder, "b.bmp", "BMP", index=2)
    hashes = {p.name: sha(p) for p in (jpg, png, bmp)}
    cat = catalog(tmp_path, [jpg, png, bmp])

    _, by_name = run(cat, "--dry-run")                                 # BMP: not in place
    assert by_name["b.bmp"]["reason"].startswith("format_not_writable")

    _, by_name = run(cat, "--sidecar", "--sidecar-naming", "stem")    # a.jpg/a.png collide
    assert by_name["a.jpg"]["reason"].startswith("sidecar_name_collision")
    assert by_name["a.png"]["reason"].startswith("sidecar_name_collision")
    assert by_name["b.bmp"]["action"] == "written"
    assert tags(folder / "b.xmp")["XMP-iptcCore:AltTextAccessibility"] == CAPTION
    assert not (folder / "a.xmp").exists()

    result, by_name = run(cat, "--sidecar")                            # default: name.ext.xmp
    assert result["counts"] == {"written": 3}
    for p in (jpg, png, bmp):
        side = folder / (p.name + ".xmp")
        assert by_name[p.name]["target"] == str(side)
        assert tags(side)["XMP-iptcCore:AltTextAccessibility"] == CAPTION
    assert {p.name: sha(p) for p in (jpg, png, bmp)} == hashes        # images untouched
    assert sorted(os.listdir(folder)) == sorted(
        ["a.jpg", "a.png", "b.bmp", "b.xmp", "a.jpg.xmp", "a.png.xmp", "b.bmp.xmp"])
    again, _ = run(cat, "--sidecar")
    assert again["counts"] == {"skipped": 3}

    # a person's words in a sidecar count too, in the field being written
    subprocess.run(["exiftool", "-q", "-overwrite_original",
                    "-XMP-iptcCore:AltTextAccessibility=Mine", str(folder / "a.jpg.xmp")],
                   check=True)
    _, by_name = run(cat)
    assert by_name["a.jpg"]["reason"].startswith("existing_text")
    assert "'Mine'" in by_name["a.jpg"]["reason"]


def test_failed_verification_restores_the_original(sample_photos, tmp_path):
    p = photo(sample_photos, tmp_path / "photos", "v.jpg", rich=True)
    original = open(p, "rb").read()
    row = {"uri": str(p), "sha256": sha(p), "caption": CAPTION, "score": -0.5,
           "model_version": "m1", "format": "JPEG"}

    class PixelsDiffer(Annotator):   # the real write happens; the check is made to fail
        def _verify(self, item, after, target):
            assert super()._verify(item, after, target) is None
            return f"verify_failed: {target}: decoded pixels differ after writing"

    with ExifToolSession() as session:
        annotator = PixelsDiffer(WritebackOptions(run_id="t"), session)
        (decision,) = annotator.annotate([row])
        annotator.close()
    assert decision["action"] == "failed" and "pixels differ" in decision["reason"]
    assert open(p, "rb").read() == original
    assert oct(os.stat(p).st_mode & 0o777) == oct(0o644)


def test_a_file_uri_row_is_written_as_the_local_file_it_names(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    paths = [photo(sample_photos, folder, name, index=i) for i, name in enumerate(["f.jpg",
                                                                                    "s.jpg"])]
    image_row, side_row = ({"uri": f"file://{p}", "sha256": sha(p), "caption": CAPTION,
                            "score": -0.5, "model_version": "m1", "format": "JPEG"}
                           for p in paths)
    (image,) = annotate([image_row], run_id="f1")
    (side,) = annotate([side_row], run_id="f2", sidecar=True)
    assert image["action"] == "written", image["reason"]
    assert tags(paths[0])["XMP-iptcCore:AltTextAccessibility"] == CAPTION
    assert (side["action"], side["target"]) == ("written", f"{paths[1]}.xmp"), side
    assert b"AltTextAccessibility" in (folder / "s.jpg.xmp").read_bytes()
    assert sorted(os.listdir(folder)) == ["f.jpg", "s.jpg", "s.jpg.xmp"]


def test_kill_mid_run_leaves_files_whole(sample_photos, tmp_path):
    """SIGKILL a writeback after its first files: each file is whole, old or new.

    200 files (about 10 ms each here) leave a window of seconds for the kill.
    """
    folder, n, at_least = tmp_path / "photos", 200, 5
    originals = [photo(sample_photos, folder, f"src{i:02d}.jpg", index=i) for i in range(18)]
    paths = [folder / f"{i:03d}.jpg" for i in range(n)]
    for i, p in enumerate(paths):
        shutil.copyfile(originals[i % 18], p)
    for src in originals:
        src.unlink()
    pixels = [pixel_frames(str(p)) for p in paths[:18]]           # the rest are copies
    hashes = {p: sha(p) for p in paths}
    states = {p: file_state(p) for p in paths}
    cat = catalog(tmp_path, paths)
    proc = subprocess.Popen([sys.executable, "-m", "altbeam.pipelines.cli", "writeback", str(cat),
                             "--quiet", "--batch-size", "1"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=REPO)
    kill_mid_run(proc, count_changed(states), at_least=at_least)
    written = some_but_not_all([p for p in paths if sha(p) != hashes[p]], n, at_least)
    assert not list((cat / "writeback").glob("run-*.parquet"))    # its log never finished
    for p in written:
        assert tags(p)["XMP-iptcCore:AltTextAccessibility"] == CAPTION, p.name
        assert pixel_frames(str(p)) == pixels[paths.index(p) % 18]


def test_caption_then_writeback_end_to_end(sample_photos, contract_model, tmp_path):
    from altbeam.pipelines.caption import pipeline as caption
    from altbeam.pipelines.caption.incremental import CHANGED, index_entry, listing_decision
    from altbeam.pipelines.caption.sources import FileRecord

    folder = tmp_path / "photos"
    paths = [photo(sample_photos, folder, f"{i}.jpg", index=i) for i in range(3)]
    cat = tmp_path / "cat"
    args = [str(folder), "--catalog", str(cat), "--model", str(contract_model), "--no-progress"]
    summary = caption.run(args)
    assert summary["captioned"] == 3
    result, by_name = run(cat)
    assert result["counts"] == {"written": 3}
    rows = {os.path.basename(r["uri"]): r for r in read_table_rows(str(cat), "catalog")}
    for p in paths:
        t = tags(p)
        assert t["XMP-iptcCore:AltTextAccessibility"] == rows[p.name]["caption"]
        assert t["XMP-altbeam:ModelVersion"] == rows[p.name]["model_version"]
        # the mtime was kept, the size was not: the listing cannot call it unchanged, ...
        st, row = os.stat(p), rows[p.name]
        assert st.st_mtime_ns // 1000 == index_entry(row).mtime_us
        assert st.st_size != row["size_bytes"]
        record = FileRecord(uri=str(p), size_bytes=st.st_size, mtime_us=st.st_mtime_ns // 1000)
        assert listing_decision(record, index_entry(row)) == CHANGED
    # ... and the content hash finds the write in the writeback log: nothing is captioned
    again = caption.run(args)
    assert (again["captioned"], again["skipped_unchanged"], again["failed"]) == (0, 3, 0)
    assert len(list(read_table_rows(str(cat), "catalog"))) == 3


def test_gcs_objects_with_generation_checks(gcs_emulator, gcs_bucket, sample_photos, tmp_path):
    from altbeam.pipelines.writeback.gcs import GcsObjects

    local = tmp_path / "up"
    for i in range(3):
        photo(sample_photos, local, f"{i}.jpg", index=i)
    gcs_emulator.upload_dir(gcs_bucket, local, "photos")
    blob = gcs_bucket.get_blob("photos/0.jpg")
    blob.content_type, blob.metadata = "image/jpeg", {"owner": "ann"}
    blob.patch()
    uris = [f"gs://{gcs_bucket.name}/photos/{i}.jpg" for i in range(3)]
    cat = catalog(tmp_path, [local / f"{i}.jpg" for i in range(3)])
    table = pq.read_table(next((cat / "catalog").glob("*.parquet"))).to_pylist()
    rows = [{**r, "uri": u} for r, u in zip(table, uris)]
    generations = {u: gcs_bucket.get_blob(u.split("/", 3)[3]).generation for u in uris}

    class Racing(GcsObjects):
        """Someone else rewrites photos/2.jpg right after the writeback downloaded it."""

        def download(self, uri, local_path, required=True):
            obj = super().download(uri, local_path, required)
            if uri.endswith("/2.jpg"):
                gcs_bucket.blob("photos/2.jpg").upload_from_string(b"someone else's bytes")
            return obj

    with ExifToolSession() as session:
        annotator = Annotator(WritebackOptions(run_id="g1"), session,
                              gcs=Racing(gcs_emulator.client))
        by_name = {os.path.basename(d["uri"]): d for d in annotator.annotate(rows)}
        side = Annotator(WritebackOptions(run_id="g2", sidecar=True), session,
                         gcs=GcsObjects(gcs_emulator.client))
        now = hashlib.sha256(gcs_bucket.blob("photos/1.jpg").download_as_bytes()).hexdigest()
        (side_decision,) = side.annotate([{**rows[1], "sha256": now}])
        annotator.close()
        side.close()
    assert by_name["0.jpg"]["action"] == "written" and by_name["1.jpg"]["action"] == "written"
    assert by_name["2.jpg"]["action"] == "skipped"
    assert by_name["2.jpg"]["reason"].startswith("concurrent_change")
    assert gcs_bucket.blob("photos/2.jpg").download_as_bytes() == b"someone else's bytes"
    got = tmp_path / "got.jpg"
    fresh = gcs_bucket.get_blob("photos/0.jpg")
    fresh.download_to_filename(got)
    assert tags(got)["XMP-iptcCore:AltTextAccessibility"] == CAPTION
    assert pixel_frames(str(got)) == pixel_frames(str(local / "0.jpg"))
    assert fresh.generation != generations[uris[0]]
    assert (fresh.content_type, fresh.metadata) == ("image/jpeg", {"owner": "ann"})
    assert side_decision["action"] == "written", side_decision["reason"]
    assert side_decision["target"] == uris[1] + ".xmp"
    # photos/1.jpg already carries our alt text; its new sidecar is ours too
    sidecar = gcs_bucket.get_blob("photos/1.jpg.xmp")
    assert sidecar is not None and b"AltTextAccessibility" in sidecar.download_as_bytes()


# --- after a killed writeback: its files, its exiftool temp files ----------------------

def test_write_whose_log_was_lost_is_recognised_only_when_consistent(sample_photos, tmp_path):
    """A killed run's written files are already_written by their provenance; a file that
    merely carries altbeam's provenance but does not fit the row stays "changed"."""
    folder = tmp_path / "photos"
    paths = [photo(sample_photos, folder, f"{i}.jpg", index=i) for i in range(6)]
    rows = [catalog_row(p) for p in paths]
    assert [d["action"] for d in annotate(rows, run_id="killed")] == ["written"] * 6
    # (the "killed" run's decisions never reach the log: the sha256 chain is empty)

    resized = paths[2]                                  # same XMP, other pixels and size
    with Image.open(resized) as im:
        im.resize((im.width // 2, im.height // 2)).save(folder / "small.jpg")
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-tagsFromFile", str(resized),
                    "-xmp", str(folder / "small.jpg")], check=True)   # the XMP block
    os.replace(folder / "small.jpg", resized)
    assert tags(resized)["XMP-altbeam:Caption"] == CAPTION
    rows[3] = {**rows[3], "model_version": "m2"}                  # another model's caption
    rows[4] = {**rows[4], "_logged_write_runs": ["killed"]}       # its write was logged
    rows[5] = {**rows[5], "processed_at": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}
    hashes = {p: sha(p) for p in paths}

    decisions = annotate(rows, run_id="rerun")
    reasons = [d["reason"].split(":", 1)[0] for d in decisions]
    assert reasons == ["already_written", "already_written"] + [
        "changed_since_catalogued"] * 4, [d["reason"] for d in decisions]
    assert all(d["action"] == "skipped" for d in decisions)
    assert {p: sha(p) for p in paths} == hashes                    # nothing written

    # A sidecar write never changes the image: a changed image is never "ours".
    (d,) = annotate([rows[0]], run_id="rerun", sidecar=True)
    assert d["reason"].startswith("changed_since_catalogued"), d


def test_dead_runs_exiftool_temp_file_is_removed_a_live_one_kept(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    dead, live, odd, dry = (photo(sample_photos, folder, f"{n}.jpg", index=i)
                            for i, n in enumerate(("dead", "live", "odd", "dry")))
    for p in (dead, live, dry):
        (folder / f"{p.name}_exiftool_tmp").write_bytes(open(p, "rb").read()[:3000])
    os.mkdir(folder / "odd.jpg_exiftool_tmp")           # not a file exiftool left
    rows = {p.name: catalog_row(p) for p in (dead, live, odd, dry)}
    before = {p.name: sha(p) for p in (dead, live, odd, dry)}
    time.sleep(0.05)
    started = time.time()                              # "this run" starts now

    (d,) = annotate([rows["dry.jpg"]], run_id="t", started_at=started, dry_run=True)
    assert d["action"] == "would_write"
    assert (folder / "dry.jpg_exiftool_tmp").exists()   # a dry run changes nothing

    (d,) = annotate([rows["dead.jpg"]], run_id="t", started_at=started)
    assert d["action"] == "written", d
    assert "dead.jpg_exiftool_tmp, left by an earlier run" in d["reason"]
    assert not (folder / "dead.jpg_exiftool_tmp").exists()
    assert tags(dead)["XMP-iptcCore:AltTextAccessibility"] == CAPTION

    # Touched after this run began (another process may be writing the photo right
    # now), or not a regular file: left alone, and so is the photo.
    (folder / "live.jpg_exiftool_tmp").write_bytes(b"still being written")
    decisions = annotate([rows["live.jpg"], rows["odd.jpg"]], run_id="t",
                         started_at=started)
    assert [(d["action"], d["reason"].split(":", 1)[0]) for d in decisions] == [
        ("skipped", "concurrent_write")] * 2, [d["reason"] for d in decisions]
    assert (folder / "live.jpg_exiftool_tmp").read_bytes() == b"still being written"
    assert (folder / "odd.jpg_exiftool_tmp").is_dir()
    assert (sha(live), sha(odd)) == (before["live.jpg"], before["odd.jpg"])
