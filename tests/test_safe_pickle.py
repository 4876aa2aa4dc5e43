"""Tests for the allowlist unpickler shared by the MANO, detectron2 and FrankMocap readers."""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest

from hoirecon.errors import UserError
from hoirecon.io.safe_pickle import NUMPY_GLOBALS, latin1_bytes, restricted_load


def _load(blob: bytes, allowed=NUMPY_GLOBALS, what: str = "test.pkl"):
    return restricted_load(io.BytesIO(blob), allowed, what)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numpy_arrays_round_trip(protocol):
    payload = {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
        "f64_fortran": np.asfortranarray(np.linspace(0, 1, 6).reshape(2, 3)),
        "u32": np.arange(5, dtype=np.uint32),
        "bool": np.array([True, False]),
        "zero_d": np.array(2.5),
        "scalar": np.float64(1.25),
        "int_scalar": np.int64(-3),
        "text": "lbs",
        "raw": b"\x00\xffbytes",  # protocol < 3 stores bytes through _codecs.encode(.., 'latin1')
        "nested": [(1, 2.0), {"k": None}],
    }
    loaded = _load(pickle.dumps(payload, protocol=protocol))
    assert loaded.keys() == payload.keys()
    for key, value in payload.items():
        if isinstance(value, (np.ndarray, np.generic)):
            assert type(loaded[key]) is type(value) and loaded[key].dtype == value.dtype, key
            np.testing.assert_array_equal(loaded[key], value)
        else:
            assert loaded[key] == value, key
    assert loaded["f64_fortran"].flags.f_contiguous


def test_numpy1_module_paths_are_understood():
    blob = pickle.dumps({"a": np.arange(3.0), "s": np.float32(2)}, protocol=2)
    assert b"numpy._core.multiarray\n" in blob
    loaded = _load(blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    np.testing.assert_array_equal(loaded["a"], np.arange(3.0))
    assert loaded["s"] == np.float32(2)


class _Reduce:
    """Pickles as ``func(*args)``: what a malicious file contains."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_code_execution_payloads_are_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payloads = [
        (_Reduce(os.system, f"touch {marker}"), ".system"),  # posix.system
        (_Reduce(eval, f"open({str(marker)!r}, 'w')"), ".eval"),  # builtins, or __builtin__ below protocol 3
        (_Reduce(getattr, "", "join"), ".getattr"),
        (_Reduce(subprocess.Popen, ["touch", str(marker)]), ".Popen"),  # commands.Popen below protocol 3
        (_Reduce(collections.OrderedDict), "collections.OrderedDict"),  # harmless, but not allowed here
    ]
    for payload, name in payloads:
        with pytest.raises(UserError) as err:
            _load(pickle.dumps({"x": np.zeros(2), "evil": payload}, protocol=protocol), what="evil.pkl")
        message = str(err.value)
        assert "\n" not in message and message.startswith("refusing to load evil.pkl: it asks for ")
        assert name in message.split("it asks for ")[1] and "not allowed" in message
    assert not marker.exists()


def test_unknown_modules_are_never_imported(monkeypatch):
    attempts = []

    class RecordingFinder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            attempts.append(name)
            return None

    monkeypatch.setattr(sys, "meta_path", [RecordingFinder(), *sys.meta_path])
    blob = b"\x80\x02choirecon_never_imported_module\nrun\nq\x00)\x81q\x01."
    with pytest.raises(UserError, match=r"hoirecon_never_imported_module\.run, which is not allowed"):
        _load(blob)
    assert attempts == [] and "hoirecon_never_imported_module" not in sys.modules


def test_persistent_ids_and_out_of_band_buffers_are_refused():
    class PersistentPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage-0" if isinstance(obj, np.ndarray) else None

    buffer = io.BytesIO()
    PersistentPickler(buffer, protocol=2).dump({"w": np.zeros(3)})
    with pytest.raises(UserError, match="refusing to load test.pkl: it asks for persistent id 'storage-0'"):
        _load(buffer.getvalue())

    out_of_band = pickle.dumps(np.zeros(3), protocol=5, buffer_callback=lambda b: False)
    with pytest.raises(UserError, match="cannot read test.pkl: "):
        _load(out_of_band)


def test_codecs_encode_is_latin1_only():
    assert latin1_bytes("\xff\x00a", "latin-1") == b"\xff\x00a"
    assert latin1_bytes("abc", "ISO-8859-1") == b"abc"
    with pytest.raises(pickle.UnpicklingError):
        latin1_bytes("abc", "rot13")
    blob = pickle.dumps(_Reduce(codecs.encode, "abc", "rot13"), protocol=2)
    assert b"_codecs\nencode" in blob
    with pytest.raises(UserError, match="cannot read test.pkl: UnpicklingError: .*latin-1"):
        _load(blob)


def test_values_built_on_demand_and_errors_of_allowed_callables(monkeypatch):
    class OnDemand(dict):
        def __missing__(self, key):
            if key[0] != "allowed_mod":
                raise KeyError(key)
            self[key] = value = type(key[1], (), {})
            return value

    class Thing:
        pass

    Thing.__module__, Thing.__qualname__ = "allowed_mod", "Thing"
    module = types.ModuleType("allowed_mod")
    module.Thing = Thing
    monkeypatch.setitem(sys.modules, "allowed_mod", module)  # for pickling only
    blob = pickle.dumps([Thing(), Thing()], protocol=2)
    monkeypatch.delitem(sys.modules, "allowed_mod")
    a, b = _load(blob, OnDemand())
    assert type(a) is type(b) and type(a).__name__ == "Thing"

    def picky(value):
        raise UserError(f"value {value} is not allowed here")

    blob = pickle.dumps(_Reduce(pow, 7), protocol=4)
    with pytest.raises(UserError, match=r"^cannot read t.pkl: value 7 is not allowed here$"):
        _load(blob, {("builtins", "pow"): picky}, what="t.pkl")


def test_unreadable_files_are_one_line_user_errors(tmp_path):
    good = pickle.dumps({"a": np.arange(3)}, protocol=2)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle at all\n\nsecond line")
    for path in (truncated, garbage, tmp_path / "absent.pkl", tmp_path):
        with pytest.raises(UserError) as err:
            restricted_load(path, NUMPY_GLOBALS, f"model {path}")
        assert "\n" not in str(err.value) and str(err.value).startswith(f"cannot read model {path}: ")
    path = tmp_path / "ok.pkl"
    path.write_bytes(good)
    np.testing.assert_array_equal(restricted_load(str(path), NUMPY_GLOBALS, "ok")["a"], np.arange(3))
