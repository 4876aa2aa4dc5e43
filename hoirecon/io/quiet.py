"""Silencing native libraries that log straight to file descriptor 2 (TFLite, COLMAP's glog)."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def quiet_native_stderr():
    """Send fd 2 to /dev/null for the block (Python's ``sys.stderr`` redirection does not reach
    C++ loggers); keeps the terminal for the tool's own one-line messages."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
