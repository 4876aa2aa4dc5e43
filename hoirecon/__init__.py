"""hoirecon: reconstruct a hand and the object it holds from a short video clip (DiffHOI)."""

__version__ = "0.1.0"
