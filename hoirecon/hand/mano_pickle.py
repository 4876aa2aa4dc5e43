"""Read the official MANO pickle without chumpy and without trusting the file.

``MANO_RIGHT.pkl`` (MANO v1.2) is a Python-2 pickle of a dict of numpy arrays, one
``scipy.sparse.csc_matrix`` (``J_regressor``) and ``chumpy.ch.Ch`` objects (e.g.
``shapedirs``); chumpy does not install on current Python/numpy. Plain ``pickle.load`` would
also run whatever a tampered file asks for. ``load_mano_pickle`` therefore unpickles with
``hoirecon.io.safe_pickle.restricted_load`` and this allowlist (``_ManoGlobals``):

- ``NUMPY_GLOBALS``: numpy's array/dtype/scalar reconstructors and ``_codecs.encode``
  restricted to latin-1 (how Python-3 pickles of protocol < 3 store bytes);
- ``chumpy.*`` classes -> ``_ChumpyStandIn``, which keeps the pickled state; afterwards it is
  replaced by its array (chumpy stores the value under ``"x"`` in its state dict);
- ``scipy.sparse`` CSC/CSR matrices -> ``_SparseStandIn``, converted to a dense array by
  this module (no scipy object is ever constructed from the file);
- a few inert builtins (``object``, ``set``, ``frozenset``, ``slice``, ``complex``),
  ``OrderedDict`` and ``copyreg._reconstructor`` restricted to building those stand-ins;
- anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) -> ``UserError``
  before it is called.
"""

from __future__ import annotations

import builtins
import copyreg
import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from hoirecon.errors import UserError
from hoirecon.io.safe_pickle import NUMPY_GLOBALS, restricted_load

__all__ = ["load_mano_pickle", "restricted_loads"]


class _StandIn:
    """Base for objects rebuilt from a pickle as inert state holders."""

    qualname = "?"
    # Class default: copyreg._reconstructor creates instances without calling __new__.
    state: Any = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "_StandIn":
        obj = super().__new__(cls)
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ChumpyStandIn(_StandIn):
    """Any ``chumpy`` class; becomes ``np.asarray(state["x"])``."""

    def to_array(self) -> np.ndarray:
        state = self.state
        if isinstance(state, dict) and "x" in state:
            return np.asarray(_convert(state["x"]))
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise UserError(f"unsupported chumpy object {self.qualname} in MANO pickle (state: {keys})")


class _SparseStandIn(_StandIn):
    """``scipy.sparse`` CSC or CSR matrix; becomes a dense ndarray."""

    fmt = "csc"

    def to_array(self) -> np.ndarray:
        state = self.state
        if not isinstance(state, dict):
            kind = type(state).__name__
            raise UserError(f"unsupported sparse matrix state in MANO pickle: {kind}")
        try:
            shape = tuple(int(s) for s in state.get("_shape", state.get("shape")))
            data = np.asarray(state["data"])
            indices = np.asarray(state["indices"], dtype=np.int64)
            indptr = np.asarray(state["indptr"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"malformed sparse matrix in MANO pickle: {exc}") from exc
        # CSC: indptr runs over columns and indices are rows; CSR the other way round.
        major = shape[1] if self.fmt == "csc" else shape[0]
        minor = shape[0] if self.fmt == "csc" else shape[1]
        if len(indptr) != major + 1 or len(indices) != len(data) or indptr[-1] != len(data):
            raise UserError("malformed sparse matrix in MANO pickle: inconsistent index arrays")
        if len(indices) and (indices.min() < 0 or indices.max() >= minor):
            raise UserError("malformed sparse matrix in MANO pickle: index out of range")
        major_index = np.repeat(np.arange(major), np.diff(indptr))
        dense = np.zeros(shape, dtype=data.dtype)
        if self.fmt == "csc":
            np.add.at(dense, (indices, major_index), data)
        else:
            np.add.at(dense, (major_index, indices), data)
        return dense


def _stand_in(base: type[_StandIn], module: str, name: str, **attrs: Any) -> type:
    return type(name, (base,), {"qualname": f"{module}.{name}", **attrs})


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` limited to our stand-ins on top of ``object``."""
    if base is not object or not (isinstance(cls, type) and issubclass(cls, _StandIn)):
        raise pickle.UnpicklingError("the pickle asks to reconstruct a non-allowed object")
    return copyreg._reconstructor(cls, base, state)


_SPARSE_MODULES = {
    "scipy.sparse.csc": "csc",
    "scipy.sparse._csc": "csc",
    "scipy.sparse.csr": "csr",
    "scipy.sparse._csr": "csr",
}


class _ManoGlobals(dict):
    """The allowlist of one load: fixed entries, plus a stand-in class made on first lookup
    for each ``chumpy.*`` class and each scipy CSC/CSR matrix class the file names."""

    def __init__(self) -> None:
        super().__init__({
            **NUMPY_GLOBALS,
            **{(module, name): getattr(builtins, name) for module in ("builtins", "__builtin__")
               for name in ("object", "set", "frozenset", "slice", "complex")},
            ("collections", "OrderedDict"): OrderedDict,
            ("copyreg", "_reconstructor"): _safe_reconstructor,
            ("copy_reg", "_reconstructor"): _safe_reconstructor,
        })

    def __missing__(self, key: tuple[str, str]) -> type:
        module, name = key
        fmt = _SPARSE_MODULES.get(module)
        if module == "chumpy" or module.startswith("chumpy."):
            self[key] = _stand_in(_ChumpyStandIn, module, name)
        elif fmt is not None and name == f"{fmt}_matrix":
            self[key] = _stand_in(_SparseStandIn, module, name, fmt=fmt)
        else:
            raise KeyError(key)
        return self[key]


def _convert(value: Any) -> Any:
    """Replace stand-ins by arrays, recursively through dicts, lists and tuples."""
    if isinstance(value, (_ChumpyStandIn, _SparseStandIn)):
        return value.to_array()
    if isinstance(value, _StandIn):
        raise UserError(f"unexpected object {value.qualname} in MANO pickle")
    if isinstance(value, dict):
        return {k: _convert(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_convert(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_convert(v) for v in value)
    return value


def restricted_loads(data: bytes, what: str = "MANO pickle") -> Any:
    """Unpickle ``data`` with the allowlist above and convert stand-ins to arrays.

    Raises:
        UserError: the pickle refers to a non-allowed global, or is malformed.
    """
    return _convert(restricted_load(io.BytesIO(data), _ManoGlobals(), what))


def load_mano_pickle(path: str | Path) -> dict[str, Any]:
    """Load an official MANO ``.pkl`` as a plain dict of numpy arrays (and strings).

    Chumpy arrays and sparse matrices become dense ``np.ndarray``; nothing in the file can
    run code. Keys are converted to ``str``.

    Raises:
        UserError: unreadable file, non-allowed content, or not a dict.
    """
    path = Path(path)
    what = f"MANO model {path}"
    obj = restricted_load(path, _ManoGlobals(), what)  # its errors name the file
    try:
        obj = _convert(obj)
    except UserError as exc:
        raise UserError(f"{what}: {exc}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a dict in the MANO pickle, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}
