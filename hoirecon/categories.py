"""The object categories the tool knows (the six of the paper's HOI4D evaluation, and more).

The category conditions the diffusion prior. ``unknown`` is accepted for anything else and
makes the prior category-agnostic.
"""

from __future__ import annotations

from hoirecon.errors import UserError

PAPER_CATEGORIES = ("mug", "bottle", "kettle", "bowl", "knife", "toy_car")
CATEGORIES = PAPER_CATEGORIES + ("unknown",)
_ALIASES = {"toy car": "toy_car", "toycar": "toy_car", "toy-car": "toy_car", "cup": "mug", "none": "unknown"}


def normalize_category(name: str) -> str:
    """Canonical category name, or UserError listing the known ones."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in CATEGORIES:
        raise UserError(f"unknown category '{name}': choose one of {', '.join(CATEGORIES)}")
    return key
