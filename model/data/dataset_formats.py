"""The caption-file formats `load_dataset` reads (model/data/datasets.py), one reader each.

Flickr8k token files (+ split lists), JSONL (one image or one pair per line), CSV with
an image and a caption column, COCO ``captions_*.json``, Karpathy's split files and the
``{image: [captions..., path]}`` map; `read_any` picks the reader from the path.
Every reader returns `CaptionedImage`s and raises `DatasetError` naming the file,
the line (or entry) and what is wrong. Pure Python: no TensorFlow, no Beam.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import pathlib
import re

log = logging.getLogger(__name__)

FLICKR8K_TOKENS = "Flickr8k.token.txt"
FLICKR8K_SPLIT_LISTS = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
# Where each format's images usually sit, relative to the caption file's folder.
_IMAGE_DIRS = ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images", ".")
_IMAGE_KEYS = ("file", "image", "filename", "file_name", "image_path", "path")


class DatasetError(ValueError):
    """Malformed or unusable dataset input; the message names the file and the place."""


@dataclasses.dataclass(frozen=True)
class CaptionedImage:
    image_id: str
    path: str | None
    captions: list[str]
    split: str


def read_any(path: pathlib.Path, image_root: pathlib.Path | None) -> list[CaptionedImage]:
    if path.is_dir():
        if (path / FLICKR8K_TOKENS).is_file():
            return read_flickr8k(path / FLICKR8K_TOKENS, image_root)
        if (path / "captions.jsonl").is_file():
            return read_jsonl(path / "captions.jsonl", image_root)
        raise DatasetError(
            f"{path}: no {FLICKR8K_TOKENS} or captions.jsonl in this folder; "
            "pass the caption file itself (.json, .jsonl, .csv, .txt)"
        )
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    name = path.name.lower()
    if name.endswith(".token.txt"):
        return read_flickr8k(path, image_root)
    if name.endswith(".jsonl"):
        return read_jsonl(path, image_root)
    if name.endswith(".txt") and _looks_like_flickr8k_tokens(path):
        return read_flickr8k(path, image_root)
    if name.endswith((".csv", ".txt")):
        return read_csv(path, image_root)
    if name.endswith(".json"):
        return read_json(path, image_root)
    raise DatasetError(
        f"{path}: unknown dataset format (expected a Flickr8k folder, *.token.txt, "
        "*.json, *.jsonl or *.csv)"
    )



def find_image_dir(base: pathlib.Path, image_root: pathlib.Path | None, *extra: str) -> pathlib.Path:
    """image_root if given, else the first usual image folder that exists beside `base`."""
    if image_root is not None:
        return image_root
    for name in (*extra, *_IMAGE_DIRS):
        if (base / name).is_dir():
            return base / name
    return base


def _resolve(value: str, base: pathlib.Path, image_root: pathlib.Path | None) -> str:
    """An image reference as written in a caption file -> the path to look for."""
    if "://" in value or os.path.isabs(value):
        return value
    if image_root is not None:
        return str(image_root / value)
    if "/" in value:
        return str(base / value)
    return str(find_image_dir(base, None) / value)


def _read_text(path: pathlib.Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc


def _caption(value, where: str) -> str:
    if not isinstance(value, str):
        raise DatasetError(f"{where}: a caption must be a string, got {value!r}")
    text = " ".join(value.split())
    if not text:
        raise DatasetError(f"{where}: empty caption")
    return text


_TOKEN_LINE = re.compile(r"^([^\t#]+(?:#[^\t#]+)*)#(\d+)\t(.*)$")


def _looks_like_flickr8k_tokens(path: pathlib.Path) -> bool:
    with path.open(encoding="utf-8", errors="replace") as f:
        first = next((line for line in f if line.strip()), "")
    return bool(_TOKEN_LINE.match(first.rstrip("\r\n")))


def read_flickr8k(tokens: pathlib.Path, image_root: pathlib.Path | None = None) -> list[CaptionedImage]:
    """Flickr8k.token.txt ("NAME.jpg#N<TAB>caption") + the split lists beside it."""
    captions: dict[str, list[str]] = {}
    for lineno, line in enumerate(_read_text(tokens).splitlines(), 1):
        if not line.strip():
            continue
        match = _TOKEN_LINE.match(line)
        if not match:
            raise DatasetError(
                f"{tokens}:{lineno}: expected 'IMAGE.jpg#N<TAB>caption', got {line[:80]!r}"
            )
        name, _, text = match.groups()
        captions.setdefault(name, []).append(_caption(text, f"{tokens}:{lineno}"))
    split_of: dict[str, str] = {}
    where: dict[str, str] = {}
    for split, list_name in FLICKR8K_SPLIT_LISTS.items():
        list_path = tokens.parent / list_name
        if not list_path.is_file():
            continue
        unknown = 0
        for lineno, line in enumerate(_read_text(list_path).splitlines(), 1):
            name = line.strip()
            if not name:
                continue
            if name in split_of:
                raise DatasetError(
                    f"{list_path}:{lineno}: {name} is already in the {split_of[name]} split "
                    f"({where[name]})"
                )
            split_of[name], where[name] = split, f"{list_path.name}:{lineno}"
            unknown += name not in captions
        if unknown:
            log.warning("%s: %d listed images have no captions in %s", list_path, unknown, tokens.name)
    image_dir = find_image_dir(tokens.parent, image_root)
    return [
        CaptionedImage(name, str(image_dir / name), caps, split_of.get(name, "extra"))
        for name, caps in captions.items()
    ]


class _Merger:
    """Collects (image, caption(s)) rows, several per image, into CaptionedImages."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[str | None, list[str], str]] = {}

    def add(self, image_id: str, path: str | None, captions: list[str], split: str, where: str) -> None:
        if image_id not in self.items:
            self.items[image_id] = (path, list(captions), split)
            return
        old_path, old_captions, old_split = self.items[image_id]
        if old_split != split:
            raise DatasetError(f"{where}: image {image_id} is in split {old_split!r} above, {split!r} here")
        if old_path != path:
            raise DatasetError(f"{where}: image {image_id} has path {old_path!r} above, {path!r} here")
        old_captions.extend(captions)

    def result(self) -> list[CaptionedImage]:
        return [CaptionedImage(i, p, c, s) for i, (p, c, s) in self.items.items()]


def _row_image(row: dict, where: str, base: pathlib.Path, image_root: pathlib.Path | None):
    key = next((k for k in _IMAGE_KEYS if row.get(k) not in (None, "")), None)
    if key is None:
        raise DatasetError(f"{where}: no image field (one of {', '.join(_IMAGE_KEYS)})")
    value = row[key]
    if not isinstance(value, str):
        raise DatasetError(f"{where}: {key} must be a string, got {value!r}")
    explicit = next((row[k] for k in ("image_id", "coco_id") if row.get(k) not in (None, "")), None)
    image_id = str(explicit) if explicit is not None else value.rsplit("/", 1)[-1]
    return image_id, _resolve(value, base, image_root)


def read_jsonl(path: pathlib.Path, image_root: pathlib.Path | None = None) -> list[CaptionedImage]:
    """One JSON object per line: {"file"|"image"…, "captions": [...] | "caption": "...", "split"?}."""
    merger = _Merger()
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
        image_id, image_path = _row_image(row, where, path.parent, image_root)
        if "captions" in row:
            if not isinstance(row["captions"], list) or not row["captions"]:
                raise DatasetError(f"{where}: captions must be a non-empty list of strings")
            caps = [_caption(c, where) for c in row["captions"]]
        elif "caption" in row:
            caps = [_caption(row["caption"], where)]
        else:
            raise DatasetError(f"{where}: no 'captions' list or 'caption' string")
        merger.add(image_id, image_path, caps, str(row.get("split") or "all"), where)
    return merger.result()


def read_csv(path: pathlib.Path, image_root: pathlib.Path | None = None) -> list[CaptionedImage]:
    """CSV with a header: an image column (image/file/filename/…), caption, optional split/image_id."""
    merger = _Merger()
    reader = csv.DictReader(_read_text(path).splitlines())
    header = reader.fieldnames or []
    if not any(k in header for k in _IMAGE_KEYS) or "caption" not in header:
        raise DatasetError(
            f"{path}:1: the header must name an image column ({', '.join(_IMAGE_KEYS)}) and a "
            f"'caption' column; got {header}"
        )
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row:
            raise DatasetError(f"{where}: more fields than the header's {len(header)} (unquoted comma?)")
        if not any(row.values()):
            continue
        image_id, image_path = _row_image(row, where, path.parent, image_root)
        merger.add(image_id, image_path, [_caption(row["caption"] or "", where)],
                   row.get("split") or "all", where)
    return merger.result()


def read_json(path: pathlib.Path, image_root: pathlib.Path | None = None) -> list[CaptionedImage]:
    """COCO captions_*.json, Karpathy dataset_*.json, or a {image: [captions…, path]} map."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return _read_coco(path, data, image_root)
    if isinstance(data, dict) and isinstance(data.get("images"), list) and data["images"] \
            and isinstance(data["images"][0], dict) and "sentences" in data["images"][0]:
        return _read_karpathy(path, data, image_root)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        return _read_caption_map(path, data, image_root)
    raise DatasetError(
        f"{path}: unrecognised JSON layout: expected COCO captions ('images' + "
        "'annotations'), Karpathy splits ('images' with 'sentences') or {image: [captions…]}"
    )


def _field(entry, key: str, where: str, kind=str):
    if not isinstance(entry, dict) or key not in entry:
        raise DatasetError(f"{where}: missing '{key}'")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetError(f"{where}: '{key}' has the wrong type: {value!r}")
    return value


def _read_coco(path: pathlib.Path, data: dict, image_root: pathlib.Path | None) -> list[CaptionedImage]:
    split = path.stem.removeprefix("captions_")
    image_dir = find_image_dir(path.parent, image_root, split, f"../{split}")
    files: dict[int, str] = {}
    for n, image in enumerate(data["images"]):
        where = f"{path}: images[{n}]"
        files[_field(image, "id", where, int)] = _field(image, "file_name", where)
    captions: dict[int, list[str]] = {}
    for n, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{n}]"
        image_id = _field(ann, "image_id", where, int)
        if image_id not in files:
            raise DatasetError(f"{where}: image_id {image_id} is not in 'images'")
        captions.setdefault(image_id, []).append(_caption(_field(ann, "caption", where), where))
    uncaptioned = len(files) - len(captions)
    if uncaptioned:
        log.warning("%s: %d images have no captions; left out", path, uncaptioned)
    return [
        CaptionedImage(str(i), str(image_dir / name), captions[i], split)
        for i, name in files.items() if i in captions
    ]


def _read_karpathy(path: pathlib.Path, data: dict, image_root: pathlib.Path | None) -> list[CaptionedImage]:
    image_dir = find_image_dir(path.parent, image_root)
    merger = _Merger()
    for n, image in enumerate(data["images"]):
        where = f"{path}: images[{n}]"
        filename = _field(image, "filename", where)
        sentences = _field(image, "sentences", where, list)
        if not sentences:
            raise DatasetError(f"{where}: no sentences")
        caps = [_caption(_field(s, "raw", f"{where}.sentences[{k}]"), f"{where}.sentences[{k}]")
                for k, s in enumerate(sentences)]
        image_id = str(image["cocoid"]) if "cocoid" in image else filename
        image_path = image_dir / image.get("filepath", "") / filename
        merger.add(image_id, str(image_path), caps, _field(image, "split", where), where)
    return merger.result()


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


def _read_caption_map(path: pathlib.Path, data: dict, image_root: pathlib.Path | None) -> list[CaptionedImage]:
    items = []
    for name, values in data.items():
        where = f"{path}: entry {name!r}"
        if not all(isinstance(v, str) for v in values):
            raise DatasetError(f"{where}: expected a list of strings")
        # The last string is the image's path when it looks like one (no spaces, image suffix).
        ref = values[-1] if values and " " not in values[-1] and values[-1].lower().endswith(_IMAGE_SUFFIXES) else None
        caps = [_caption(c, where) for c in (values[:-1] if ref else values)]
        if not caps:
            raise DatasetError(f"{where}: no captions")
        items.append(CaptionedImage(name, _resolve(ref or name, path.parent, image_root), caps, path.stem))
    return items
