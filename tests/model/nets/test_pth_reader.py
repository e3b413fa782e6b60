"""The torch-free .pth reader: real weight files, hand-written legacy files, bad files."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from altbeam.model.nets.encoder import weights_path
from altbeam.model.nets.pth_reader import PthFormatError, read_state_dict


class _Storage:
    """Pickles as a legacy torch storage reference (written by the persistent_id hook)."""

    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, data


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


@pytest.fixture
def fake_torch_names(monkeypatch):
    """Makes ``torch._utils._rebuild_tensor_v2`` & co picklable *by name* without torch."""
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2

    class FloatStorage:
        pass

    FloatStorage.__module__ = "torch"
    FloatStorage.__qualname__ = "FloatStorage"
    torch_mod.FloatStorage = FloatStorage
    torch_mod._utils = utils_mod
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)
    return torch_mod


LEGACY_HEADERS = {"magic": 0x1950A86A20F9469CFC6C, "protocol": 1001,
                  "sys_info": {"little_endian": True}}


def write_legacy_pth(path, state: dict, storages: list[_Storage], torch_mod,
                     headers: dict = LEGACY_HEADERS, keys=None) -> None:
    """Writes the pre-1.6 ``torch.save`` layout: 5 pickles, then raw storage bytes.

    ``headers`` and ``keys`` replace the first three pickles and the storage key list.
    """

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", torch_mod.FloatStorage, obj.key, "cpu", obj.data.size, None)
            return None

    buf = io.BytesIO()
    for header in headers.values():
        pickle.dump(header, buf, protocol=2)
    Pickler(buf, protocol=2).dump(state)
    pickle.dump([s.key for s in storages] if keys is None else keys, buf, protocol=2)
    for s in storages:
        buf.write(struct.pack("<q", s.data.size))
        buf.write(s.data.astype("<f4").tobytes())
    path.write_bytes(buf.getvalue())


def write_zip_pth(path, state: dict, storages: list[_Storage], torch_mod) -> None:
    """Writes the torch >= 1.6 layout: ``archive/data.pkl`` + ``archive/data/<key>``."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", torch_mod.FloatStorage, obj.key, "cpu", obj.data.size)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buf.getvalue())
        archive.writestr("archive/version", "3\n")
        for s in storages:
            archive.writestr(f"archive/data/{s.key}", s.data.astype("<f4").tobytes())


def test_reads_the_lite0_weights_package():
    state = read_state_dict(weights_path("lite0"))
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    assert (state["_bn1.running_var"] > 0).all()
    assert all(np.isfinite(v).all() for v in state.values())


def test_hand_written_legacy_file_round_trips_strided_views(tmp_path, fake_torch_names):
    shared = _Storage("0", np.arange(12, dtype=np.float32))
    lone = _Storage("1", np.array([2.5], dtype=np.float32))
    state = collections.OrderedDict(
        matrix=_Tensor(shared, 0, (3, 4), (4, 1)),
        transposed=_Tensor(shared, 0, (4, 3), (1, 4)),  # a non-contiguous view
        tail=_Tensor(shared, 10, (2,), (1,)),
        scalar=_Tensor(lone, 0, (), ()),
    )
    path = tmp_path / "tiny.pth"
    write_legacy_pth(path, state, [shared, lone], fake_torch_names)
    got = read_state_dict(path)
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(got["matrix"], matrix)
    np.testing.assert_array_equal(got["transposed"], matrix.T)
    np.testing.assert_array_equal(got["tail"], [10.0, 11.0])
    assert got["scalar"].shape == () and got["scalar"] == 2.5


def test_hand_written_zip_file_is_read(tmp_path, fake_torch_names):
    storage = _Storage("0", np.arange(6, dtype=np.float32))
    state = collections.OrderedDict(w=_Tensor(storage, 0, (2, 3), (3, 1)))
    path = tmp_path / "tiny_zip.pth"
    write_zip_pth(path, state, [storage], fake_torch_names)
    np.testing.assert_array_equal(read_state_dict(path)["w"], [[0, 1, 2], [3, 4, 5]])


def test_zip_file_missing_a_storage_is_refused(tmp_path, fake_torch_names):
    storage = _Storage("0", np.arange(6, dtype=np.float32))
    path = tmp_path / "no_storage.pth"
    write_zip_pth(path, {"w": _Tensor(storage, 0, (6,), (1,))}, [], fake_torch_names)
    with pytest.raises(PthFormatError, match=r"no_storage\.pth.*archive/data/0"):
        read_state_dict(path)


def test_truncated_weights_file_is_refused(tmp_path):
    blob = open(weights_path("lite0"), "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(PthFormatError, match=r"cut\.pth.*truncated"):
        read_state_dict(cut)


def test_corrupted_header_is_refused(tmp_path):
    blob = bytearray(open(weights_path("lite0"), "rb").read())
    blob[3:40] = b"\xff" * 37
    bad = tmp_path / "garbled.pth"
    bad.write_bytes(bytes(blob))
    with pytest.raises(PthFormatError, match=r"garbled\.pth"):
        read_state_dict(bad)


def test_jpeg_is_refused(sample_photos):
    with pytest.raises(PthFormatError, match=r"000000017029\.jpg.*not a PyTorch file"):
        read_state_dict(sample_photos / "000000017029.jpg")


def test_empty_file_is_refused(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(PthFormatError, match=r"empty\.pth.*empty"):
        read_state_dict(empty)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(PthFormatError, match=r"nowhere\.pth.*cannot read"):
        read_state_dict(tmp_path / "nowhere.pth")


def test_pickle_without_tensors_is_refused(tmp_path, fake_torch_names):
    path = tmp_path / "no_tensors.pth"
    write_legacy_pth(path, {"epoch": 3, "lr": 0.1}, [], fake_torch_names)
    with pytest.raises(PthFormatError, match=r"no_tensors\.pth.*no tensors"):
        read_state_dict(path)


@pytest.mark.parametrize("content, reason", [
    ({"a": [0.0, 0.0]}, "magic number"),
    # Even NumPy's own array rebuilder is a global a weights file has no business calling.
    ({"a": np.zeros(3)}, r"refusing unexpected global numpy\S*\._reconstruct"),
])
def test_plain_pickle_is_refused(tmp_path, content, reason):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(PthFormatError, match=rf"plain\.pkl.*{reason}"):
        read_state_dict(path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_calling_arbitrary_globals_is_refused(tmp_path, fake_torch_names):
    path = tmp_path / "hostile.pth"
    write_legacy_pth(path, {"x": _RunsCode()}, [], fake_torch_names)
    with pytest.raises(PthFormatError, match=r"hostile\.pth.*refusing unexpected global \w*builtin\w*\.print"):
        read_state_dict(path)



# --- booby-trapped files: every pickle of both layouts goes through the restricted one --

class _Trap:
    """Unpickling it calls ``func(arg)``; with plain ``pickle`` that creates the marker."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def make_trap(kind: str, marker) -> _Trap:
    if kind == "os.system":
        return _Trap(os.system, f"touch '{marker}'")
    return _Trap(builtins.exec, f"open({str(marker)!r}, 'w').close()")


# Protocol 2 writes the builtins module under its Python 2 name, ``__builtin__``.
TRAPS = {"os.system": rf"{os.system.__module__}\.system", "builtins.exec": r"\w*builtin\w*\.exec"}


@pytest.mark.parametrize("kind", TRAPS)
def test_the_traps_are_live(tmp_path, kind):
    """The payloads below really run code when unpickled without restriction."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(make_trap(kind, marker), protocol=2))
    assert marker.exists()


@pytest.mark.parametrize("kind", TRAPS)
@pytest.mark.parametrize("trapped", [*LEGACY_HEADERS, "keys"])
def test_legacy_file_with_a_trapped_pickle_is_refused(tmp_path, fake_torch_names, kind,
                                                      trapped):
    """Whichever pickle of the legacy stream carries the payload, it never runs."""
    marker, path = tmp_path / "pwned", tmp_path / f"trapped_{trapped}.pth"
    trap = make_trap(kind, marker)
    storage = _Storage("0", np.arange(3, dtype=np.float32))
    headers = {name: trap if name == trapped else value
               for name, value in LEGACY_HEADERS.items()}
    write_legacy_pth(path, {"w": _Tensor(storage, 0, (3,), (1,))}, [storage],
                     fake_torch_names, headers=headers,
                     keys=trap if trapped == "keys" else None)
    with pytest.raises(PthFormatError,
                       match=rf"trapped_{trapped}\.pth.*refusing unexpected global {TRAPS[kind]}"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", TRAPS)
def test_zip_file_with_a_trapped_data_pkl_is_refused(tmp_path, fake_torch_names, kind):
    marker, path = tmp_path / "pwned", tmp_path / "trapped_zip.pth"
    storage = _Storage("0", np.arange(3, dtype=np.float32))
    state = collections.OrderedDict(w=_Tensor(storage, 0, (3,), (1,)),
                                    x=make_trap(kind, marker))
    write_zip_pth(path, state, [storage], fake_torch_names)
    with pytest.raises(PthFormatError,
                       match=rf"trapped_zip\.pth.*refusing unexpected global {TRAPS[kind]}"):
        read_state_dict(path)
    assert not marker.exists()
