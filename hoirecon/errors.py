"""Exceptions that the CLI turns into one clear line and an exit code.

Library code raises these (never ``sys.exit``); ``hoirecon.cli`` catches them.

- ``UserError``: bad input (missing/corrupt file, bad option value, missing weights) -> exit 2.
- ``RunError``: the input was fine but the run failed (no hand found, masks fail the
  forward-backward IoU filter, optimization diverged) -> exit 1.
"""

from __future__ import annotations


class HoireconError(Exception):
    """Base class. ``str(err)`` must be a single human-readable line."""

    exit_code = 1


class UserError(HoireconError):
    """The user's input or environment is wrong; exit 2."""

    exit_code = 2


class RunError(HoireconError):
    """A run failed on valid input; exit 1."""

    exit_code = 1


class MissingWeightsError(UserError):
    """A backend needs a checkpoint that is not in the weights folder."""

    def __init__(self, filename: str, where: str, source: str, backend: str):
        self.filename = filename
        self.where = where
        self.source = source
        self.backend = backend
        super().__init__(
            f"backend '{backend}' needs {filename}: put it at {where} (get it from {source}); "
            f"nothing is downloaded automatically"
        )
