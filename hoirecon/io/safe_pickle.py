"""Unpickle untrusted files with an allowlist of globals, so that nothing in the file runs code.

A plain ``pickle.load`` calls whatever the file names (``os.system``, ``builtins.eval``, ...).
``restricted_load`` resolves a global only through the caller's ``allowed`` mapping, refuses
persistent ids and out-of-band buffers, and turns every failure into a one-line ``UserError``.
Each reader keeps its own allowlist; ``NUMPY_GLOBALS`` is what numpy arrays need.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from hoirecon.errors import UserError

__all__ = ["NUMPY_GLOBALS", "latin1_bytes", "restricted_load"]


def latin1_bytes(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as pickles of protocol < 3 use it to store bytes (latin-1 text), nothing else."""
    if not isinstance(text, str) or not isinstance(encoding, str) or \
            encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode is allowed for latin-1 text only, not {encoding!r}")
    return text.encode("latin1")


# The numpy callables that array pickles name, taken from numpy's own reductions: their module
# is numpy.core in numpy 1 (how old checkpoints were written) and numpy._core in numpy 2.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol-5 pickles of arrays
_SCALAR = np.float64(0).__reduce__()[0]

NUMPY_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): latin1_bytes,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _SCALAR for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")},
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _AllowlistUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], allowed: Mapping[tuple[str, str], Any], encoding: str):
        super().__init__(file, encoding=encoding)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        # Only a lookup: nothing is imported. A mapping may build values on demand (a dict
        # subclass with __missing__) and raises KeyError for what it does not allow.
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _RefusedGlobal(f"persistent id {pid!r}")


def restricted_load(file: str | os.PathLike | IO[bytes], allowed: Mapping[tuple[str, str], Any], what: str,
                    encoding: str = "latin1") -> Any:
    """Unpickle ``file`` (a path or a binary file object), resolving globals only through ``allowed``.

    Args:
        allowed: ``(module, name) -> object`` handed to the pickle for that global, e.g.
            ``{**NUMPY_GLOBALS, ("collections", "OrderedDict"): OrderedDict}``. Its objects
            are called with arguments from the file, so each must be harmless for any
            arguments (classes of plain data, or functions that check what they get).
        what: names the file in messages ("MANO model /path/MANO_RIGHT.pkl").
        encoding: for Python 2 byte strings; latin-1 gives numpy's array data back unchanged.

    Raises:
        UserError: one line; ``"refusing to load <what>: it asks for os.system, which is not
            allowed"`` for a global outside ``allowed``, ``"cannot read <what>: ..."`` for an
            unreadable, truncated or malformed file (a ``UserError`` raised by an allowed
            callable keeps its text after that prefix).
    """
    try:
        if isinstance(file, (str, os.PathLike)):
            with open(file, "rb") as f:
                return _AllowlistUnpickler(f, allowed, encoding).load()
        return _AllowlistUnpickler(file, allowed, encoding).load()
    except _RefusedGlobal as err:
        raise UserError(f"refusing to load {what}: it asks for {err}, which is not allowed") from None
    except OSError as err:
        raise UserError(f"cannot read {what}: {err.strerror or err}") from None
    except UserError as err:
        raise UserError(f"cannot read {what}: {err}") from None
    except Exception as err:  # truncated or corrupt pickles raise many different types
        lines = str(err).strip().splitlines()
        reason = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
        raise UserError(f"cannot read {what}: {reason}") from None
