"""Read a PyTorch ``.pth`` state dict into NumPy arrays, without importing torch.

Handles both layouts ``torch.save`` has used:

* legacy (torch < 1.6, or ``_use_new_zipfile_serialization=False``): a stream of
  pickles (magic number, protocol version, sys info, the object, the storage keys)
  followed by each storage's raw bytes, prefixed by an int64 element count;
* zip (torch >= 1.6): ``<root>/data.pkl`` plus one ``<root>/data/<key>`` member
  per storage.

Every pickle in the file (each one of the legacy stream, or the zip's data.pkl) goes
through one restricted unpickler: only the handful of globals a state dict needs are
resolved, anything else is refused, so a hostile file cannot run code through this
reader.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

__all__ = ["PthFormatError", "read_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class name -> NumPy dtype (little-endian, as torch writes them).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class PthFormatError(ValueError):
    """The file is not a readable PyTorch state dict (message names file and reason)."""


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co: only its element dtype matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage's flat data; filled in after unpickling for the legacy layout."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _LazyTensor:
    """What ``_rebuild_tensor_v2`` returns: materialised once storages are read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise ValueError("tensor storage was never read")
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if self.size and min(self.size) > 0 and needed > flat.size:
            raise ValueError(f"tensor of shape {self.size} overruns its storage ({flat.size} elements)")
        if not self.size:
            return flat[self.offset].copy().reshape(())
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=[s * flat.itemsize for s in self.stride],
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """The one unpickler for every pickle in a ``.pth`` file, in both layouts.

    It resolves only the globals a state dict uses: tensors are rebuilt by the local
    stand-ins below and storages arrive through persistent ids. Any other global (the
    only way a pickle can call code) is refused before it is looked up.
    """

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file, load_storage=None):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        # Reached before the global is imported or called: nothing it names runs.
        raise pickle.UnpicklingError(f"refusing unexpected global {module}.{name} "
                                     "(a weights file needs only tensors; this could run code)")

    def persistent_load(self, pid):
        if (self._load_storage is None or not isinstance(pid, tuple) or not pid
                or pid[0] != "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return self._load_storage(pid)


def _load_pickle(f, load_storage=None):
    """The next pickle in ``f``; storages only where ``load_storage`` is given."""
    return _StateDictUnpickler(f, load_storage).load()


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Return the ``name -> array`` state dict stored in the ``.pth`` file at ``path``.

    Raises ``PthFormatError`` (naming the file) when the file is empty, truncated,
    corrupt, not a PyTorch file, or holds no tensors.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise PthFormatError(f"{path}: cannot read weights file: {e}") from e
    if not blob:
        raise PthFormatError(f"{path}: weights file is empty")
    try:
        if blob[:4] == b"PK\x03\x04":
            obj = _read_zip(blob)
        elif blob[:1] == b"\x80":
            obj = _read_legacy(blob)
        else:
            raise ValueError(f"not a PyTorch file (starts with {blob[:8]!r})")
        return _as_state_dict(obj)
    except PthFormatError:
        raise
    except (pickle.UnpicklingError, ValueError, EOFError, KeyError, IndexError, TypeError,
            AttributeError, struct.error, zipfile.BadZipFile) as e:
        raise PthFormatError(f"{path}: not a valid PyTorch state dict: {e}") from e


def _read_legacy(blob: bytes):
    f = io.BytesIO(blob)
    if _load_pickle(f) != _LEGACY_MAGIC:
        raise ValueError("pickle without the PyTorch magic number")
    if _load_pickle(f) != _LEGACY_PROTOCOL:
        raise ValueError("unsupported legacy protocol version")
    sys_info = _load_pickle(f)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise ValueError("big-endian files are not supported")

    storages: dict[str, _Storage] = {}
    views = []

    def load_storage(pid):
        _, storage_type, key, _location, numel, *rest = pid
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"unsupported storage type {storage_type!r}")
        if key not in storages:
            storages[key] = _Storage(storage_type.dtype, int(numel))
        view_metadata = rest[0] if rest else None
        if view_metadata is None:
            return storages[key]
        # Old files may pickle a view of a storage: (view_key, offset, size).
        _view_key, offset, size = view_metadata
        view = _Storage(storage_type.dtype, int(size))
        views.append((view, storages[key], int(offset)))
        return view

    obj = _load_pickle(f, load_storage)
    keys = _load_pickle(f)
    if not isinstance(keys, list):
        raise ValueError("missing storage key list")
    for key in keys:
        storage = storages[key]
        header = f.read(8)
        if len(header) < 8:
            raise ValueError(f"file truncated before storage {key}")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) < nbytes:
            raise ValueError(f"file truncated inside storage {key} ({len(raw)} of {nbytes} bytes)")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    for view, root, offset in views:
        view.data = root.data[offset : offset + view.numel]
    return obj


def _read_zip(blob: bytes):
    archive = zipfile.ZipFile(io.BytesIO(blob))
    pkl_names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pkl_names:
        raise ValueError("zip archive without data.pkl")
    root = pkl_names[0][: -len("data.pkl")]

    def load_storage(pid):
        _, storage_type, key, _location, numel = pid[:5]
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else None
        if dtype is None:
            raise ValueError(f"unsupported storage type {storage_type!r}")
        storage = _Storage(dtype, int(numel))
        raw = archive.read(f"{root}data/{key}")
        if len(raw) < storage.numel * dtype.itemsize:
            raise ValueError(f"storage {key} is truncated")
        storage.data = np.frombuffer(raw, dtype=dtype, count=storage.numel)
        return storage

    return _load_pickle(io.BytesIO(archive.read(pkl_names[0])), load_storage)


def _as_state_dict(obj) -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"top-level object is a {type(obj).__name__}, not a state dict")
    tensors = {str(k): v.to_numpy() for k, v in obj.items() if isinstance(v, _LazyTensor)}
    if not tensors:
        raise ValueError("the file holds no tensors")
    return tensors
