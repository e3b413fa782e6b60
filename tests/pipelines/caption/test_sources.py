"""The file listing as plain function calls on real files (no Beam pipeline)."""
from __future__ import annotations

import os

import pytest

from altbeam.pipelines.caption.sources import (
    IMAGE_EXTENSIONS,
    FileRecord,
    ListError,
    glob_root,
    has_image_extension,
    list_input,
    stat_file,
    walk_folder,
    within_root,
)


def split(items) -> tuple[set[str], dict[str, str]]:
    """(uris of FileRecords, {uri: error_type} of ListErrors)."""
    items = list(items)
    return ({i.uri for i in items if isinstance(i, FileRecord)},
            {i.uri: i.error_type for i in items if isinstance(i, ListError)})


@pytest.fixture
def tree(tmp_path):
    """root/{a.jpg, B.JPEG, notes.txt, sub/c.png, sub/d.jpg.bak}, outside/e.jpg."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    for rel in ("a.jpg", "B.JPEG", "notes.txt", "sub/c.png", "sub/d.jpg.bak"):
        (root / rel).write_bytes(b"x" * 10)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "e.jpg").write_bytes(b"y" * 20)
    return root


def test_extension_filter_is_case_blind_and_looks_at_the_name_only():
    assert has_image_extension("/p/a.JPG", IMAGE_EXTENSIONS)
    assert has_image_extension("gs://b/dir.jpg/photo.png", IMAGE_EXTENSIONS)
    assert not has_image_extension("/p/a.jpg.bak", IMAGE_EXTENSIONS)
    assert not has_image_extension("/p.jpg/readme", IMAGE_EXTENSIONS)
    assert not has_image_extension("/p/a.png", frozenset({".jpg"}))


def test_within_root_compares_whole_path_components():
    assert within_root("/a/b", "/a/b") and within_root("/a/b/c.jpg", "/a/b")
    assert within_root("/a/b/c.jpg", "/a/b/")
    assert not within_root("/a/bc/d.jpg", "/a/b")              # a prefix, not a parent
    assert not within_root("/a", "/a/b")


def test_glob_root_is_the_literal_folder_before_the_pattern():
    assert glob_root("/photos/2024/*.jpg") == "/photos/2024"
    assert glob_root("/photos/20[0-9]*/x.jpg") == "/photos"
    assert glob_root("*.jpg") == "."


def test_a_folder_lists_its_images_recursively(tree):
    files, errors = split(walk_folder(str(tree), IMAGE_EXTENSIONS))
    assert files == {f"{tree}/a.jpg", f"{tree}/B.JPEG", f"{tree}/sub/c.png"} and not errors
    record = next(i for i in walk_folder(str(tree), IMAGE_EXTENSIONS) if i.uri.endswith("a.jpg"))
    st = os.stat(tree / "a.jpg")
    assert (record.size_bytes, record.mtime_us) == (10, st.st_mtime_ns // 1000)
    files, _ = split(walk_folder(str(tree), frozenset({".png"})))
    assert files == {f"{tree}/sub/c.png"}


def test_a_symlink_out_of_the_root_is_an_error_unless_followed(tree):
    outside = tree.parent / "outside"
    (tree / "link.jpg").symlink_to(outside / "e.jpg")
    (tree / "linked_dir").symlink_to(outside, target_is_directory=True)
    (tree / "loop").symlink_to(tree, target_is_directory=True)
    files, errors = split(walk_folder(str(tree), IMAGE_EXTENSIONS))
    assert errors == {f"{tree}/link.jpg": "symlink_outside_root"}
    assert f"{tree}/linked_dir/e.jpg" not in files              # folder links not entered
    files, errors = split(walk_folder(str(tree), IMAGE_EXTENSIONS, follow_symlinks=True))
    assert {f"{tree}/link.jpg", f"{tree}/linked_dir/e.jpg"} <= files and not errors
    assert not any("/loop/" in f for f in files)                # a cycle is walked once


def test_broken_symlinks_and_loops_fail_alone(tree):
    (tree / "gone.jpg").symlink_to(tree / "nothing.jpg")
    (tree / "self.jpg").symlink_to(tree / "self.jpg")
    assert stat_file(str(tree / "gone.jpg"), str(tree)).error_type == "broken_symlink"
    assert stat_file(str(tree / "self.jpg"), str(tree)).error_type == "symlink_loop"
    files, errors = split(walk_folder(str(tree), IMAGE_EXTENSIONS))
    assert f"{tree}/a.jpg" in files
    assert errors == {f"{tree}/gone.jpg": "broken_symlink", f"{tree}/self.jpg": "symlink_loop"}


def test_one_input_folder_glob_file_or_missing(tree):
    assert split(list_input(str(tree)))[0] == {
        f"{tree}/a.jpg", f"{tree}/B.JPEG", f"{tree}/sub/c.png"}
    assert split(list_input(f"{tree}/sub/*"))[0] == {f"{tree}/sub/c.png"}
    # A file named explicitly is taken whatever its extension.
    assert split(list_input(str(tree / "notes.txt")))[0] == {f"{tree}/notes.txt"}
    assert split(list_input(str(tree / "nope"))) == (set(), {str(tree / "nope"): "not_found"})


def test_file_uris_are_listed_as_local_paths(tree):
    files, errors = split(list_input(f"file://{tree}"))
    assert files == {f"{tree}/a.jpg", f"{tree}/B.JPEG", f"{tree}/sub/c.png"} and not errors


def test_files_over_the_size_limit_become_errors(tree):
    (tree / "big.jpg").write_bytes(b"z" * 11)
    files, errors = split(list_input(str(tree), max_file_size=10))
    assert errors == {f"{tree}/big.jpg": "too_large"}
    assert f"{tree}/a.jpg" in files                              # exactly at the limit


def test_an_unlistable_folder_is_reported_not_lost(tree):
    locked = tree / "locked"
    locked.mkdir()
    (locked / "f.jpg").write_bytes(b"x")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: permission bits do not stop listing")
        files, errors = split(walk_folder(str(tree), IMAGE_EXTENSIONS))
    finally:
        locked.chmod(0o755)
    assert f"{tree}/a.jpg" in files and list(errors) == [str(locked)]
