"""Small inline JPEG thumbnails (base64 data URIs) for the HTML report.

Reads the image at its catalogued URI (a local path, or anything Beam's FileSystems can
open, such as gs://), never writes to it. A missing or unreadable image gives a
:class:`Thumbnail` with ``data_uri=None`` and the reason, not an exception.
"""
from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import io
import os

from PIL import Image, ImageOps

from altbeam.pipelines.runtime.uris import is_remote, local_path

MAX_SOURCE_BYTES = 256 << 20   # don't pull huge files into memory for a 160 px preview
BYTES_AT_160 = 3800            # base64 image data of a 160 px photo thumbnail, past headers


@dataclasses.dataclass(frozen=True)
class Thumbnail:
    data_uri: str | None
    width: int = 0
    height: int = 0
    reason: str | None = None    # why there is no thumbnail

    @property
    def size(self) -> int:
        return len(self.data_uri or "")


def read_source(uri: str) -> bytes:
    """The bytes of the image at ``uri`` (at most MAX_SOURCE_BYTES + 1 of them)."""
    if is_remote(uri):
        from apache_beam.io.filesystems import FileSystems  # slow import: only when remote

        with FileSystems.open(uri) as f:
            return f.read(MAX_SOURCE_BYTES + 1)
    with open(local_path(uri), "rb") as f:
        return f.read(MAX_SOURCE_BYTES + 1)


def make_thumbnail(uri: str, side: int = 160, quality: int = 60) -> Thumbnail:
    """A JPEG thumbnail fitting ``side``×``side``, or the reason there is none."""
    try:
        data = read_source(uri)
        if len(data) > MAX_SOURCE_BYTES:
            return Thumbnail(None, reason=f"file larger than {MAX_SOURCE_BYTES >> 20} MiB")
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (side * 2, side * 2))   # JPEG: decode at reduced scale
            im = ImageOps.exif_transpose(im)
            im.thumbnail((side, side))
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGBA")
                backdrop = Image.new("RGB", im.size, (255, 255, 255))
                backdrop.paste(im, mask=im.getchannel("A"))
                im = backdrop
            out = io.BytesIO()
            im.save(out, "JPEG", quality=quality, optimize=True)
            width, height = im.size
    except FileNotFoundError:
        return Thumbnail(None, reason="image file not found")
    except Exception as exc:  # any decode/IO failure becomes a placeholder, with why
        return Thumbnail(None, reason=f"unreadable image ({type(exc).__name__}: {exc})")
    encoded = base64.b64encode(out.getvalue()).decode("ascii")
    return Thumbnail(f"data:image/jpeg;base64,{encoded}", width, height)


def fit_side(count: int, budget_bytes: int | None, side: int = 160, floor: int = 64) -> int:
    """Shrink the thumbnail side until ``count`` thumbnails should fit the budget
    (base64 JPEG at quality 60: ~1 kB of headers plus ~3.8 kB per 160 px square)."""
    if budget_bytes is None:
        return side
    while side > floor and count * (1000 + BYTES_AT_160 * (side / 160) ** 2) > budget_bytes:
        side = max(floor, int(side * 0.85))
    return side


def make_thumbnails(uris: list[str], side: int = 160, budget_bytes: int | None = None,
                    workers: int | None = None) -> list[Thumbnail]:
    """Thumbnails for ``uris`` in order; past ``budget_bytes`` of base64 the rest are
    left out (placeholder with the reason) so the page stays a sensible size."""
    workers = workers or min(8, os.cpu_count() or 2)
    left_out = Thumbnail(None, reason="thumbnail left out: page size budget reached "
                                      "(see --max-mb)")
    results: list[Thumbnail] = []
    used = 0
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(uris), 64):   # in chunks, to stop once over budget
            if budget_bytes is not None and used >= budget_bytes:
                results += [left_out] * (len(uris) - start)
                break
            for thumb in pool.map(lambda u: make_thumbnail(u, side), uris[start:start + 64]):
                if budget_bytes is not None and thumb.data_uri and used + thumb.size > budget_bytes:
                    thumb, used = left_out, budget_bytes
                used += thumb.size
                results.append(thumb)
    return results
