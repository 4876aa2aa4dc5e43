"""Where user-supplied checkpoints live, and the one way to ask for one.

The folder is ``$HOIRECON_WEIGHTS`` if set, else ``weights/`` in the repository (next to
the package). Nothing is ever downloaded: a missing file raises ``MissingWeightsError``
whose message names the file, where it goes and where a user gets it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hoirecon.errors import MissingWeightsError

_REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def weights_dir() -> Path:
    """The folder searched for checkpoints."""
    env = os.environ.get("HOIRECON_WEIGHTS")
    return Path(env).expanduser() if env else _REPO_WEIGHTS


def require_weights(relative: str, backend: str, source: str) -> Path:
    """Return ``weights_dir()/relative`` if it exists, else raise ``MissingWeightsError``.

    Args:
        relative: path inside the weights folder, e.g. ``"mano/MANO_RIGHT.pkl"``.
        backend: the backend that needs it (for the message), e.g. ``"mano"``.
        source: where a user obtains the file (URL or instructions).
    """
    path = weights_dir() / relative
    if not path.is_file():
        raise MissingWeightsError(relative, str(path), source, backend)
    return path
