"""Read a detectron2 model-zoo ``.pkl`` checkpoint without running arbitrary pickled code.

detectron2 zoo files are pickles of ``{"model": {name: numpy array}, "__author__": str}``
(detectron2 reads them with ``pickle.load(f, encoding="latin1")``). A plain ``pickle.load``
on a user-supplied file can execute anything, so this reader (``restricted_load``) resolves
only the few globals that numpy arrays need (``NUMPY_GLOBALS``: array reconstruction,
``dtype``, numpy scalars, the ``_codecs.encode(text, "latin1")`` that Python 3 writes for
``bytes`` under pickle protocol <= 2) and ``OrderedDict``. Any other global (``os.system``,
``builtins.eval``, ...) is refused with a ``UserError`` before it is called.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from hoirecon.errors import UserError
from hoirecon.io.safe_pickle import NUMPY_GLOBALS, restricted_load

# numpy arrays (with the _codecs.encode that protocol <= 2 writes for bytes) and OrderedDict.
_DETECTRON2_GLOBALS = {**NUMPY_GLOBALS, ("collections", "OrderedDict"): collections.OrderedDict}


def load_detectron2_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read the ``model`` dict of a detectron2 zoo ``.pkl`` (names -> numeric numpy arrays).

    Raises ``UserError`` (one line) if the file is not a pickle, needs any global other than
    numpy arrays / plain containers, or does not hold ``{"model": {str: ndarray}}``.
    """
    path = Path(path)
    data = restricted_load(path, _DETECTRON2_GLOBALS, f"detectron2 checkpoint {path}")
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
