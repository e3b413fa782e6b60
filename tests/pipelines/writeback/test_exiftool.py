"""The -stay_open exiftool session: batches with per-command status, hostile names, restarts."""
from __future__ import annotations

import os
import shutil

import pytest

from altbeam.pipelines.writeback.exiftool_session import ExifToolSession, file_arg, line_safe

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool missing")


@pytest.fixture
def session():
    with ExifToolSession(timeout=30) as s:
        yield s


@pytest.fixture
def jpeg(sample_photos, tmp_path):
    def copy(name: str):
        path = tmp_path / name
        shutil.copyfile(sorted(sample_photos.glob("*.jpg"))[0], path)
        os.chmod(path, 0o644)
        return str(path)
    return copy


def test_batch_keeps_per_file_status(session, jpeg, tmp_path):
    good, also_good = jpeg("a.jpg"), jpeg("b.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg at all")
    results = session.read_json([good, str(tmp_path / "missing.jpg"), str(tmp_path / "bad.jpg"),
                                 also_good])
    assert results[0]["System:FileName"] == "a.jpg"
    assert results[3]["System:FileName"] == "b.jpg"
    assert results[1].status != 0 and "File not found" in results[1].message()
    value = session.value_file("x")
    written = session.run([["-overwrite_original", f"-XMP-dc:Title<={value}", file_arg(p)]
                           for p in (good, str(tmp_path / "bad.jpg"), also_good)])
    assert [r.status for r in written] == [0, 1, 0]
    assert "bad.jpg" in written[1].message()


@pytest.mark.parametrize("name", ["-delete_original!.jpg", "-@ x.jpg",
                                  "-overwrite_original_in_place.jpg", "new\nline.jpg",
                                  "-execute.jpg", "#hash.jpg", " lead.jpg", "trail\r.jpg",
                                  "-stay_open.jpg"])
def test_hostile_file_names_are_files(session, jpeg, tmp_path, name):
    path = jpeg(name)
    other = jpeg("other.jpg")
    before = sorted(os.listdir(tmp_path))
    value = session.value_file("caption\n-x = <y> $z @w")
    (res,) = session.run([["-overwrite_original", f"-XMP-dc:Title<={value}", file_arg(path)]])
    assert res.status == 0, res.stderr
    (tags,) = session.read_json([path])
    assert tags["XMP-dc:Title"] == "caption\n-x = <y> $z @w"
    assert sorted(os.listdir(tmp_path)) == before          # nothing deleted or added
    (untouched,) = session.read_json([other])
    assert "XMP-dc:Title" not in untouched


def test_values_travel_verbatim(session, jpeg):
    path = jpeg("v.jpg")
    text = "  two spaces\n-dash first\r\nkey=value \\n <b>&amp;</b> \"q\" $x @y \t\n\n"
    value = session.value_file(text)
    (res,) = session.run([["-overwrite_original", f"-XMP-iptcCore:AltTextAccessibility<={value}",
                           f"-XMP-altbeam:Caption<={value}", file_arg(path)]])
    assert res.status == 0, res.stderr
    (tags,) = session.read_json([path])
    assert tags["XMP-iptcCore:AltTextAccessibility"] == text
    assert tags["XMP-altbeam:Caption"] == text


def test_line_safety_rules():
    assert line_safe("/abs/-@ x.jpg")
    for bad in ("a\nb", "a\r", " lead", "#comment", ""):
        assert not line_safe(bad)


def test_session_survives_exiftool_dying(session, jpeg):
    path = jpeg("d.jpg")
    session.read_json([path])
    dead = session._proc
    dead.kill()
    dead.wait()
    (tags,) = session.read_json([path])            # a dead process is restarted
    assert tags["System:FileName"] == "d.jpg" and session._proc is not dead


def test_timeout_kills_and_reports(jpeg):
    path = jpeg("t.jpg")
    with ExifToolSession(timeout=0.001) as s:
        # -stay_open answers a batch of 40 reads in far more than 40 ms
        results = s.read_json([path] * 40)
    assert all(getattr(r, "status", None) == -1 for r in results)
    assert "did not answer" in results[0].message()
