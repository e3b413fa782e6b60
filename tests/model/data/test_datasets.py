"""altbeam.model.data.datasets: every supported format, read from small real excerpts (tests/data) and,
when present, from the full shared datasets."""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil

import pytest

from altbeam.model.data.datasets import (
    CaptionedImage,
    DatasetError,
    describe,
    load_dataset,
    missing_image_files,
    references,
)
from tests.support.paths import TEST_DATA

DATA = TEST_DATA
GIRL = "1000268201_693b08cb0e.jpg"
GIRL_FIRST = "A child in a pink dress is climbing up a set of stairs in an entry way ."


def _by_id(items):
    return {item.image_id: item for item in items}


def _splits(items):
    return {item.image_id: item.split for item in items}


def test_flickr8k_folder_and_token_file():
    items = load_dataset(DATA / "flickr8k", missing_images="ignore")
    assert load_dataset(DATA / "flickr8k" / "Flickr8k.token.txt", missing_images="ignore") == items
    assert _splits(items) == {
        GIRL: "train",
        "1001773457_577c3a7d70.jpg": "train",
        "1002674143_1b742ab4b8.jpg": "train",
        "2090545563_a4e66ec76b.jpg": "dev",
        "3393035454_2d2370ffd4.jpg": "dev",
        "1155138244_859fd6e079.jpg": "extra",
        "2258277193_586949ec62.jpg.1": "extra",  # the real token file's known stray entry
    }
    girl = _by_id(items)[GIRL]
    assert girl.captions[0] == GIRL_FIRST and len(girl.captions) == 5
    assert girl.path == str(DATA / "flickr8k" / GIRL)
    assert [len(i.captions) for i in items] == [5] * 7


def test_shared_layout_captions_jsonl():
    flickr = load_dataset(DATA / "shared_flickr8k", missing_images="ignore")
    assert _splits(flickr) == {
        GIRL: "train", "1001773457_577c3a7d70.jpg": "train",
        "2090545563_a4e66ec76b.jpg": "dev", "1155138244_859fd6e079.jpg": "extra",
    }
    assert _by_id(flickr)[GIRL].path == str(DATA / "shared_flickr8k" / "images" / GIRL)
    coco = load_dataset(DATA / "shared_coco", missing_images="ignore")
    assert [(i.image_id, i.split) for i in coco] == [("51191", "train2017"), ("60623", "train2017")]
    assert coco[0].path.endswith("shared_coco/images/000000051191.jpg")


def test_official_coco_captions():
    items = load_dataset(DATA / "coco" / "captions_val2017.json", missing_images="ignore")
    assert [i.image_id for i in items] == ["37777", "252219", "87038"]
    assert {i.split for i in items} == {"val2017"}
    assert all(len(i.captions) == 5 for i in items)
    assert items[0].captions[0].startswith("The dining table near the kitchen")
    assert items[0].path == str(DATA / "coco" / "000000037777.jpg")


def test_flickr30k_caption_map_keeps_path_out_of_captions():
    items = load_dataset(DATA / "flickr30k" / "test.json", missing_images="ignore")
    assert len(items) == 3 and all(len(i.captions) == 5 for i in items)
    first = items[0]
    assert first.image_id == "1016887272.jpg" and first.split == "test"
    assert first.path == str(DATA / "flickr30k" / "flickr30k-images" / "1016887272.jpg")
    assert not any(c.endswith(".jpg") for i in items for c in i.captions)


def test_karpathy_split_files():
    flickr = load_dataset(DATA / "karpathy" / "dataset_flickr8k.json", missing_images="ignore")
    assert [i.split for i in flickr] == ["train", "train", "val", "test"]
    assert _by_id(flickr)[GIRL].captions[0] == GIRL_FIRST
    coco = load_dataset(DATA / "karpathy" / "dataset_coco.json", missing_images="ignore",
                        image_root="/data/coco")
    assert [(i.image_id, i.split, i.path) for i in coco] == [
        ("37777", "val", "/data/coco/val2017/000000037777.jpg"),
        ("252219", "restval", "/data/coco/val2017/000000252219.jpg"),
        ("87038", "test", "/data/coco/val2017/000000087038.jpg"),
    ]


def test_pairs_csv_and_jsonl_merge_rows_per_image():
    csv_items = load_dataset(DATA / "pairs" / "captions.txt", missing_images="ignore")
    assert [(i.image_id, len(i.captions), i.split) for i in csv_items] == [
        (GIRL, 5, "all"), ("1001773457_577c3a7d70.jpg", 5, "all"), ("1002674143_1b742ab4b8.jpg", 1, "all"),
    ]
    # A quoted caption with commas stays one caption.
    assert csv_items[2].captions == [
        "A little girl, covered in paint, sits in front of a painted rainbow ."
    ]
    jsonl_items = load_dataset(DATA / "pairs" / "pairs.jsonl", missing_images="ignore")
    assert [(i.image_id, len(i.captions), i.split) for i in jsonl_items] == [
        (GIRL, 3, "train"), ("2090545563_a4e66ec76b.jpg", 3, "dev"),
    ]
    assert jsonl_items[0].path == str(DATA / "pairs" / "photos" / GIRL)


def test_same_photo_same_id_and_captions_in_every_format():
    readers = [
        load_dataset(DATA / "flickr8k", missing_images="ignore"),
        load_dataset(DATA / "shared_flickr8k", missing_images="ignore"),
        load_dataset(DATA / "karpathy" / "dataset_flickr8k.json", missing_images="ignore"),
        load_dataset(DATA / "pairs" / "captions.txt", missing_images="ignore"),
    ]
    assert len({tuple(_by_id(items)[GIRL].captions) for items in readers}) == 1
    coco_official = _by_id(load_dataset(DATA / "coco" / "captions_val2017.json", missing_images="ignore"))
    coco_karpathy = _by_id(load_dataset(DATA / "karpathy" / "dataset_coco.json", missing_images="ignore"))
    assert references(coco_official.values()) == references(coco_karpathy.values())


def test_split_selection_and_aliases():
    flickr = DATA / "flickr8k"
    assert len(load_dataset(flickr, "train", missing_images="ignore")) == 3
    assert len(load_dataset(flickr, "train,dev", missing_images="ignore")) == 5
    karpathy = DATA / "karpathy" / "dataset_flickr8k.json"
    assert [i.image_id for i in load_dataset(karpathy, "dev", missing_images="ignore")] == [
        "2090545563_a4e66ec76b.jpg"
    ]
    coco = DATA / "karpathy" / "dataset_coco.json"
    assert len(load_dataset(coco, "train,restval", missing_images="ignore")) == 1
    with pytest.raises(DatasetError, match=r"no split 'tset'; it has dev \(2\), extra \(2\), train \(3\)"):
        load_dataset(flickr, "tset")


def _flickr8k_with_some_images(tmp_path: pathlib.Path) -> pathlib.Path:
    """The excerpt with placeholder files for 4 of its 7 images (the reader only checks existence)."""
    root = tmp_path / "flickr8k"
    shutil.copytree(DATA / "flickr8k", root)
    (root / "images").mkdir()
    for name in [GIRL, "1001773457_577c3a7d70.jpg", "2090545563_a4e66ec76b.jpg", "1155138244_859fd6e079.jpg"]:
        (root / "images" / name).write_bytes(b"")
    return root


def test_missing_images_warn_drop_error_ignore(tmp_path, caplog):
    root = _flickr8k_with_some_images(tmp_path)
    with caplog.at_level(logging.WARNING, logger="altbeam.model.data.datasets"):
        kept = load_dataset(root)
    assert len(kept) == 7 and len(missing_image_files(kept)) == 3
    assert "3 of 7 image files are missing" in caplog.text
    assert kept[0].path == str(root / "images" / GIRL)  # found the images/ folder
    dropped = load_dataset(root, missing_images="drop")
    assert _splits(dropped) == {  # in the token file's order
        GIRL: "train", "1001773457_577c3a7d70.jpg": "train",
        "1155138244_859fd6e079.jpg": "extra", "2090545563_a4e66ec76b.jpg": "dev",
    }
    with pytest.raises(DatasetError, match=r"flickr8k: 1 of 2 image files are missing.*3393035454"):
        load_dataset(root, "dev", missing_images="error")
    assert len(load_dataset(root, missing_images="ignore")) == 7
    elsewhere = load_dataset(root, image_root=tmp_path / "nowhere", missing_images="ignore")
    assert elsewhere[0].path == str(tmp_path / "nowhere" / GIRL)


def test_captioned_image_is_frozen_and_described():
    item = CaptionedImage("a.jpg", None, ["a dog"], "train")
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.split = "dev"  # type: ignore[misc]
    assert missing_image_files([item]) == [item]
    assert missing_image_files([CaptionedImage("b", "gs://bucket/b.jpg", ["x"], "train")]) == []
    assert describe([item, item]) == "train: 2 images, 2 captions"


def _write(path: pathlib.Path, text: str | bytes) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("f/Flickr8k.token.txt", "a.jpg#0\tA dog .\na.jpg#1 A cat .\n",
         r"Flickr8k.token.txt:2: expected 'IMAGE.jpg#N<TAB>caption'"),
        ("f/Flickr8k.token.txt", "a.jpg#0\tA dog .\na.jpg#1\t  \n", r"Flickr8k.token.txt:2: empty caption"),
        ("f/Flickr8k.token.txt", b"a.jpg#0\tA dog .\na.jpg#1\tA caf\xe9\n", r"Flickr8k.token.txt:2: not UTF-8"),
        ("p.jsonl", '{"image": "a.jpg", "caption": "a dog"}\n{"image": "b.jpg", "caption": "x"\n',
         r"p.jsonl:2: invalid JSON"),
        ("p.jsonl", '{"image": "a.jpg", "text": "a dog"}\n', r"p.jsonl:1: no 'captions' list or 'caption'"),
        ("p.jsonl", '{"caption": "a dog"}\n', r"p.jsonl:1: no image field"),
        ("p.jsonl", '["a.jpg", "a dog"]\n', r"p.jsonl:1: expected a JSON object, got list"),
        ("p.jsonl", '{"image": "a.jpg", "captions": []}\n', r"p.jsonl:1: captions must be a non-empty list"),
        ("p.jsonl", '{"image": "a.jpg", "caption": "x", "split": "train"}\n'
                    '{"image": "a.jpg", "caption": "y", "split": "test"}\n',
         r"p.jsonl:2: image a.jpg is in split 'train' above, 'test' here"),
        ("p.csv", "file,text\na.jpg,a dog\n", r"p.csv:1: the header must name an image column"),
        ("p.csv", "image,caption\na.jpg,a dog\nb.jpg,a cat, sitting\n", r"p.csv:3: more fields than the header"),
        ("p.csv", "image,caption\na.jpg,\n", r"p.csv:2: empty caption"),
        ("x.json", '{"images": [], "annotations": [{"image_id": 1, "caption": "x"}]}',
         r"x.json: annotations\[0\]: image_id 1 is not in 'images'"),
        ("x.json", '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1}]}',
         r"x.json: annotations\[0\]: missing 'caption'"),
        ("k.json", '{"images": [{"sentences": [{"raw": "a dog"}], "split": "train"}]}',
         r"k.json: images\[0\]: missing 'filename'"),
        ("k.json", '{"images": [{"filename": "a.jpg", "sentences": [], "split": "train"}]}',
         r"k.json: images\[0\]: no sentences"),
        ("m.json", '{"a.jpg": ["a dog", 3]}', r"m.json: entry 'a.jpg': expected a list of strings"),
        ("m.json", '{"a.jpg": ["dir/a.jpg"]}', r"m.json: entry 'a.jpg': no captions"),
        ("u.json", '{"data": 3}', r"u.json: unrecognised JSON layout"),
        ("b.json", '{"images": [\n  {"id": 1,}\n]}', r"b.json:2: invalid JSON"),
        ("d.parquet", "x", r"d.parquet: unknown dataset format"),
    ],
)
def test_malformed_input_names_file_place_and_problem(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path, missing_images="ignore")


def test_image_in_two_split_lists_is_an_error(tmp_path):
    root = tmp_path / "f"
    _write(root / "Flickr8k.token.txt", "a.jpg#0\tA dog .\nb.jpg#0\tA cat .\n")
    _write(root / "Flickr_8k.trainImages.txt", "a.jpg\nb.jpg\n")
    _write(root / "Flickr_8k.devImages.txt", "b.jpg\n")
    with pytest.raises(DatasetError, match=r"devImages.txt:1: b.jpg is already in the train split "
                                           r"\(Flickr_8k.trainImages.txt:2\)"):
        load_dataset(root)


def test_unknown_folder_and_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="no Flickr8k.token.txt or captions.jsonl"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_dataset(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="missing_images"):
        load_dataset(DATA / "flickr8k", missing_images="skip")


def test_full_shared_flickr8k(shared_datasets):
    folder = shared_datasets / "flickr8k"
    everything = load_dataset(folder, missing_images="ignore")
    # The original token file names one image that is not in the dataset.
    assert [i.image_id for i in missing_image_files(everything)] == ["2258277193_586949ec62.jpg.1"]
    items = load_dataset(folder, missing_images="drop")
    assert len(items) == 7089
    assert describe(items) == (
        "dev: 1000 images, 5000 captions; extra: 92 images, 460 captions; "
        "train: 5997 images, 29985 captions"
    )
    shared_layout = load_dataset(folder / "captions.jsonl", missing_images="error")
    assert {i.image_id: (i.split, i.captions, i.path) for i in shared_layout} == {
        i.image_id: (i.split, i.captions, i.path) for i in items
    }
    assert len(load_dataset(folder, "dev", missing_images="drop")) == 1000


def test_shared_coco_and_flickr30k(shared_datasets):
    coco = load_dataset(shared_datasets / "coco", missing_images="error")
    assert describe(coco) == "train2017: 50 images, 250 captions; val2017: 209 images, 1046 captions"
    official = _by_id(load_dataset(shared_datasets / "coco" / "captions_val2017.json", missing_images="drop"))
    assert len(official) == 209
    for item in coco:
        if item.split == "val2017":
            assert official[item.image_id].captions == item.captions
            assert official[item.image_id].path == item.path
    flickr30k = load_dataset(shared_datasets / "flickr30k" / "validation.json", "val", missing_images="ignore")
    assert len(flickr30k) == 980 and all(len(i.captions) == 5 for i in flickr30k)
