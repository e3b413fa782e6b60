"""gs:// images for the writeback: download a generation, upload only over that generation.

The writeback edits a local copy and uploads it with ``if_generation_match`` set to
the generation it downloaded, so an object changed by someone else in between is
never overwritten: GCS answers 412 Precondition Failed and the image is skipped with
reason ``concurrent_change``. New sidecar objects are uploaded with
``if_generation_match=0`` (only if absent).

gcp-storage-emulator (the test double) ignores generation preconditions (its
object handlers never read ``ifGenerationMatch``), so before uploading the object's
current generation is also re-read and compared: that check is what the emulator
tests exercise; on real GCS the precondition closes the remaining window.
"""
from __future__ import annotations

import dataclasses
import os


class ConcurrentChange(Exception):
    """The object's generation is no longer the one that was read."""


@dataclasses.dataclass
class RemoteObject:
    uri: str
    local_path: str
    generation: int | None        # None: the object did not exist (new sidecar)
    blob: object = None


def split_gs(uri: str) -> tuple[str, str]:
    bucket, _, name = uri[len("gs://"):].partition("/")
    if not bucket or not name:
        raise ValueError(f"{uri}: not a gs://bucket/object URI")
    return bucket, name


class GcsObjects:
    """Downloads and conditional uploads through one google-cloud-storage client."""

    def __init__(self, client=None):
        if client is None:
            from google.cloud import storage

            client = storage.Client()
        self._client = client

    def _blob(self, uri: str):
        bucket, name = split_gs(uri)
        return self._client.bucket(bucket).get_blob(name)

    def download(self, uri: str, local_path: str, required: bool = True) -> RemoteObject:
        """Fetch the current generation of ``uri`` into ``local_path``."""
        blob = self._blob(uri)
        if blob is None:
            if required:
                raise FileNotFoundError(f"{uri}: object not found")
            return RemoteObject(uri, local_path, None)
        generation = int(blob.generation)   # the download may reset it from its headers
        blob.download_to_filename(local_path, if_generation_match=generation)
        return RemoteObject(uri, local_path, generation, blob)

    def upload(self, obj: RemoteObject) -> None:
        """Upload ``obj.local_path`` over exactly the generation read (or only if absent)."""
        from google.api_core.exceptions import PreconditionFailed

        current = self._blob(obj.uri)
        current_generation = None if current is None else int(current.generation)
        if current_generation != obj.generation:
            raise ConcurrentChange(
                f"{obj.uri}: generation is now {current_generation}, was {obj.generation} "
                "when read")
        if obj.blob is None:
            bucket, name = split_gs(obj.uri)
            obj.blob = self._client.bucket(bucket).blob(name)
            obj.blob.content_type = "application/rdf+xml"
        try:
            # The blob object carries the object's content type and custom metadata,
            # which the upload keeps.
            obj.blob.upload_from_filename(obj.local_path,
                                          if_generation_match=obj.generation or 0)
        except PreconditionFailed as e:
            raise ConcurrentChange(f"{obj.uri}: changed while being annotated ({e})") from e

    @staticmethod
    def cleanup(*objs: RemoteObject | None) -> None:
        for obj in objs:
            if obj is not None and os.path.exists(obj.local_path):
                os.unlink(obj.local_path)
