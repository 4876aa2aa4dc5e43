"""Object category names: the ones the tool knows (the six of the paper's HOI4D evaluation) and
any other name a user gives.

The category conditions the diffusion prior. ``run``/``fit`` accept any name
(``category_name``): a name outside the prior's vocabulary runs the prior's unconditional,
category-agnostic branch (``unknown``), and DiffHOI's text prior reads the name itself. Code
that needs one of the known categories (procedural objects in ``synth``, the prior's
training data) uses ``normalize_category``.
"""

from __future__ import annotations

from hoirecon.errors import UserError

PAPER_CATEGORIES = ("mug", "bottle", "kettle", "bowl", "knife", "toy_car")
UNKNOWN = "unknown"
CATEGORIES = PAPER_CATEGORIES + (UNKNOWN,)
_ALIASES = {"toy car": "toy_car", "toycar": "toy_car", "toy-car": "toy_car", "cup": "mug", "none": UNKNOWN}


def category_name(name: str) -> str:
    """A known category's canonical name, or the name as given (lower case, single spaces).

    UserError only for an empty name.
    """
    key = " ".join(str(name).split()).lower()
    if not key:
        raise UserError("--category must not be empty: name the object (any word), or 'unknown'")
    return _ALIASES.get(key, key)


def normalize_category(name: str) -> str:
    """Canonical name of one of the known categories, or UserError listing them."""
    key = category_name(name)
    if key not in CATEGORIES:
        raise UserError(f"unknown category '{name}': choose one of {', '.join(CATEGORIES)} "
                        f"('{UNKNOWN}' means any other object)")
    return key
