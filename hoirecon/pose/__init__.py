"""Per-frame hand + object pose network (Liu et al., semi-supervised, with interactions in time).

Library only (no CLI, no cache): ``network`` (the model), ``geometry`` (control points, voting,
PnP, crops), ``losses``; the ``hoirecon pose`` stage lives in ``hoirecon.stages.pose``.
"""
