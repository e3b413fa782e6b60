"""Attention heatmaps for the HTML report (`altbeam report --attention`).

For each image on the page the model's ``caption_with_attention`` signature gives the
best caption's words and, per word, the soft attention over the encoder's G x G grid.
Each map is upsampled (bilinear) over a small copy of the model's input picture, shown
as a red overlay scaled to that word's peak, and inlined as a JPEG ``data:`` URI in a
collapsed ``<details>`` strip. Images go through ``altbeam.pipelines.caption.decode.decode_image``
exactly as in the caption pipeline, in batches; the photo files are only read.
A model without the signature is not an error: the page renders without heatmaps.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import sys

import numpy as np
from PIL import Image

from altbeam.model.serving.caption_status import NO_CAPTION
from altbeam.pipelines.catalog.api import STATUS_MEANINGS
from altbeam.pipelines.report.html import esc
from altbeam.pipelines.report.thumbs import MAX_SOURCE_BYTES, read_source
from altbeam.pipelines.runtime.redact import redact

SIGNATURE = "caption_with_attention"
MINI_SIDE = 64       # longest side of a per-word heatmap, in pixels
BATCH_SIZE = 16      # images per model call
STRENGTH = 0.6       # overlay opacity at a word's attention peak


class ModelUnusable(Exception):
    """The model named with --model cannot be loaded (message says why)."""


@dataclasses.dataclass
class Heatmaps:
    """One image's strip: ``words`` and their ``images`` (data URIs), or ``reason``."""
    words: list[str] = dataclasses.field(default_factory=list)
    images: list[str] = dataclasses.field(default_factory=list)
    caption: str = ""
    size: tuple[int, int] = (0, 0)
    reason: str | None = None


def overlay(base: Image.Image, attention: np.ndarray, strength: float = STRENGTH) -> Image.Image:
    """``base`` with the G x G ``attention`` map upsampled over it as a red tint (opacity
    ``strength`` at the map's peak, none where it is 0)."""
    weights = np.clip(np.nan_to_num(np.asarray(attention, np.float32)), 0, None)
    peak = float(weights.max()) if weights.size else 0.0
    weights = weights / peak if peak > 0 else weights
    heat = np.asarray(Image.fromarray(weights).resize(base.size, Image.Resampling.BILINEAR))
    alpha = np.clip(heat, 0, 1)[..., None] * strength
    rgb = np.asarray(base.convert("RGB"), np.float32)
    out = rgb * (1 - alpha) + np.array([255.0, 0.0, 0.0], np.float32) * alpha
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))


def jpeg_data_uri(image: Image.Image, quality: int = 75) -> str:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def pick_model(explicit: str | None, run_summaries: list[dict]) -> str:
    """--model, else the model the latest run used (when still there), else the bundled one."""
    if explicit:
        return explicit
    from apache_beam.io.filesystems import FileSystems  # slow import: only with --attention

    for summary in sorted(run_summaries, key=lambda s: str(s.get("finished_at") or ""),
                          reverse=True):
        path = summary.get("model")
        if isinstance(path, str) and path and FileSystems.exists(
                path.rstrip("/") + "/saved_model.pb"):
            return path
    from altbeam.model import DEFAULT_MODEL_DIR
    return DEFAULT_MODEL_DIR


class AttentionModel:
    """The SavedModel's attention signature; ``None`` from :meth:`load` when it has none."""

    def __init__(self, fn, input_name: str, image_size: int, version: str):
        self.fn, self.input_name = fn, input_name
        self.image_size, self.version = image_size, version

    @classmethod
    def load(cls, path: str) -> AttentionModel | None:
        from altbeam.model.serving.saved_model import LoadedModel
        from altbeam.pipelines.caption.inference import BEAM_STORAGE, read_model_info

        try:
            info = read_model_info(path)
            loaded = LoadedModel(path, info.image_size, BEAM_STORAGE)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, with why
            raise ModelUnusable(f"cannot load model {redact(path)}: {exc}") from exc
        fn = loaded.signature(SIGNATURE)
        if fn is None:
            return None
        model = cls(fn, next(iter(fn.structured_input_signature[1])), info.image_size,
                    info.version)
        model._loaded = loaded    # keep the variables alive with the function
        return model

    def __call__(self, pixels: np.ndarray):
        """uint8 [N, S, S, 3] -> (best captions [N], words [N, T], attention [N, T, G, G])."""
        import tensorflow as tf

        out = self.fn(**{self.input_name: tf.constant(pixels, dtype=tf.uint8)})
        captions = [c.decode("utf-8") for c in out["captions"].numpy()[:, 0]]
        words = [[w.decode("utf-8") for w in row] for row in out["words"].numpy()]
        return captions, words, out["attention"].numpy()


def _strip(pixels: np.ndarray, width: int, height: int, caption: str, words: list[str],
           attention: np.ndarray) -> Heatmaps:
    # The model saw the photo stretched to a square: stretch its input back to the
    # photo's aspect ratio, so the map lands where it looked.
    scale = MINI_SIDE / max(width, height, 1)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    base = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
    kept = [(w, attention[t]) for t, w in enumerate(words) if w]
    if kept and all(np.ptp(a) < 1e-6 for _, a in kept):   # Show-and-Tell: nothing to show
        return Heatmaps(caption=caption, reason="the model's attention is uniform "
                        "(a decoder without attention)")
    return Heatmaps([w for w, _ in kept], [jpeg_data_uri(overlay(base, a)) for _, a in kept],
                    caption, size)


def make_heatmaps(uris: list[str], model: AttentionModel,
                  budget_bytes: int | None = None) -> list[Heatmaps]:
    """Heatmap strips for ``uris`` in order; past ``budget_bytes`` of data URIs the rest
    get a reason instead (and the model is no longer run)."""
    from altbeam.pipelines.caption.decode import ImageDecodeError, decode_image

    results: list[Heatmaps] = []
    used = 0
    for start in range(0, len(uris), BATCH_SIZE):
        if budget_bytes is not None and used >= budget_bytes:
            break
        batch, decoded = uris[start:start + BATCH_SIZE], {}
        for i, uri in enumerate(batch):
            try:
                data = read_source(uri)
                if len(data) > MAX_SOURCE_BYTES:
                    raise ValueError(f"file larger than {MAX_SOURCE_BYTES >> 20} MiB")
                decoded[i] = decode_image(data, model.image_size, uri)
            except ImageDecodeError as exc:
                decoded[i] = exc.reason
            except FileNotFoundError:
                decoded[i] = "image file not found"
            except Exception as exc:  # noqa: BLE001 - an unreadable file is one image's note
                decoded[i] = f"unreadable image ({type(exc).__name__}: {exc})"
        good = [i for i in range(len(batch)) if not isinstance(decoded[i], str)]
        if good:
            try:
                captions, words, attention = model(np.stack([decoded[i].pixels for i in good]))
            except Exception as exc:  # noqa: BLE001 - one failed batch is a note on its cards
                for i in good:
                    decoded[i] = f"model failed on this batch ({type(exc).__name__}: {exc})"
        for i in range(len(batch)):
            if isinstance(decoded[i], str):
                results.append(Heatmaps(reason=decoded[i]))
                continue
            j = good.index(i)
            meta = decoded[i].metadata
            strip = _strip(decoded[i].pixels, meta.width, meta.height, captions[j], words[j],
                           attention[j])
            cost = sum(len(u) for u in strip.images)
            if budget_bytes is not None and used + cost > budget_bytes:
                used = budget_bytes
                break
            used += cost
            results.append(strip)
    left_out = "heatmaps left out: page size budget reached (see --max-mb)"
    return results + [Heatmaps(reason=left_out)] * (len(uris) - len(results))


def render_heatmaps(heat: Heatmaps, catalog_caption: str | None, model_version: str) -> str:
    """The card's collapsed heatmap strip (every string escaped)."""
    if heat.reason:
        return f'<p class="muted heat-none">no attention heatmaps: {esc(redact(heat.reason))}</p>'
    note = ""
    if heat.caption.strip() != (catalog_caption or "").strip():
        note = (f'<p class="heat-note">Model {esc(model_version)} captions this image '
                f"differently; the maps belong to its words: “{esc(' '.join(heat.words))}”</p>")
    width, height = heat.size
    minis = "".join(
        f'<figure><img src="{uri}" alt="attention for “{esc(word)}”" width="{width}" '
        f'height="{height}" loading="lazy" decoding="async"><figcaption>{esc(word)}'
        f"</figcaption></figure>" for word, uri in zip(heat.words, heat.images))
    count = f"{len(heat.words)} word{'s' if len(heat.words) != 1 else ''}"
    return (f'<details class="heat"><summary>attention ({count})</summary>'
            f'{note}<div class="heat-strip">{minis}</div></details>')


def attention_fragments(images: list[dict], explicit_model: str | None,
                        run_summaries: list[dict], budget_bytes: int | None
                        ) -> tuple[list[str] | None, str]:
    """Per-card heatmap HTML (None when the model has no attention) and a one-line note
    for the page; notices also go to stderr."""
    path = pick_model(explicit_model, run_summaries)
    note = None
    try:
        model = AttentionModel.load(path)
    except ModelUnusable as exc:
        if explicit_model:
            raise       # the user named it: a usage error, not a notice
        note = f"{exc}: the report is rendered without attention heatmaps"
    if note is None and model is None:
        note = (f"model {redact(path)} has no {SIGNATURE} signature (exported before "
                "heatmaps existed?): the report is rendered without attention heatmaps")
    if note:
        print(f"altbeam report: notice: {note}", file=sys.stderr)
        return None, note
    print(f"altbeam report: attention heatmaps from model {redact(path)} (version "
          f"{model.version})", file=sys.stderr)
    # An image the catalog holds back (too small, blank) gets no model caption here either:
    # words and maps for a grey square would be the invented text the gate withheld.
    held = {i: STATUS_MEANINGS[r["caption_status"]] for i, r in enumerate(images)
            if r.get("caption_status") in NO_CAPTION}
    made = iter(make_heatmaps([r["uri"] for i, r in enumerate(images) if i not in held],
                              model, budget_bytes))
    heats = [Heatmaps(reason=held[i]) if i in held else next(made) for i in range(len(images))]
    return ([render_heatmaps(h, r.get("caption"), model.version)
             for h, r in zip(heats, images)],
            f"Attention heatmaps from model {redact(path)} (version {model.version}).")
