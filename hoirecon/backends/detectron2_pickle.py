"""Read a detectron2 model-zoo ``.pkl`` checkpoint without running arbitrary pickled code.

detectron2 zoo files are pickles of ``{"model": {name: numpy array}, "__author__": str}``
(detectron2 reads them with ``pickle.load(f, encoding="latin1")``). A plain ``pickle.load``
on a user-supplied file can execute anything, so this reader resolves only the few globals
that numpy arrays need (array reconstruction, ``dtype``, numpy scalars), ``OrderedDict``,
and the ``_codecs.encode(text, "latin1")`` that Python 3 writes for ``bytes`` under pickle
protocol <= 2. Any other global (``os.system``, ``builtins.eval``, ...) is refused with a
``UserError`` before it is called.
"""

from __future__ import annotations

import codecs
import collections
import importlib
import pickle
from pathlib import Path

import numpy as np

from hoirecon.errors import UserError


def _latin1_encode(text: str | bytes, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """The only use of ``_codecs.encode`` in a pickle: text -> bytes for protocol <= 2."""
    if isinstance(text, bytes):
        return text
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with {type(text).__name__}/{encoding}")
    return text.encode("latin1", errors)


def _numpy_attr(module: str, name: str):
    # numpy 2 moved numpy.core -> numpy._core; pickles written by numpy 1 name the old path.
    for candidate in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` knows numpy arrays and plain containers only."""

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_attr(module, name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise _RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _RefusedGlobal(f"persistent id {pid!r}")


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def load_detectron2_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read the ``model`` dict of a detectron2 zoo ``.pkl`` (names -> numeric numpy arrays).

    Raises ``UserError`` (one line) if the file is not a pickle, needs any global other than
    numpy arrays / plain containers, or does not hold ``{"model": {str: ndarray}}``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except _RefusedGlobal as err:
        raise UserError(f"refusing to load {path}: the pickle asks for {err}, but a detectron2 "
                        f"checkpoint may only contain numpy arrays and plain containers") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, UnicodeDecodeError, OverflowError) as err:
        raise UserError(f"cannot read {path} as a detectron2 .pkl checkpoint: "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                        ) from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise UserError(f"{path} is not a detectron2 checkpoint: expected a dict with a 'model' "
                        f"dict of arrays")
    model = data["model"]
    for name, value in model.items():
        if (not isinstance(name, str) or not isinstance(value, np.ndarray)
                or value.dtype.kind not in "fiub"):
            raise UserError(f"{path} is not a detectron2 checkpoint: entry {name!r} is "
                            f"{type(value).__name__}, not a numeric array")
    return model
