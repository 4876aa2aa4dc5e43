"""Running torch on a given number of CPU threads for a block of code."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def torch_threads(n: int | None = 1) -> Iterator[None]:
    """Run torch CPU ops on ``n`` intra-op threads inside the block, restoring the count after
    (``None`` leaves it as it is).

    Most of this code runs many small batched ops (hand batches, a few hundred thousand
    pixel-face pairs): on a shared 2-core machine OpenMP workers waiting for a core cost far
    more than they gain (the hand IK 70 s instead of 6 s for 30 frames, the export pictures
    145 s instead of 12 s, measured with 2 threads against 1).
    """
    import torch  # here, so that importing hoirecon.io stays light

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
