"""The process of one batch clip: ``hoirecon run ARGS``, ended by the kernel when its batch dies.

Without this a batch killed with SIGKILL would leave its clips running as orphans that keep
their output folders locked, and the rerun would find them "in use".
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to send SIGTERM when the parent process ends; exit now if it already has."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the batch's own cleanup still stops its clips
        return
    if os.getppid() != parent_pid:  # the parent ended before the request was made
        sys.exit(128 + signal.SIGTERM)


def main() -> None:
    parent = os.environ.get("HOIRECON_BATCH_PARENT")
    if parent:
        die_with_parent(int(parent))
    from hoirecon.cli import main as cli_main

    sys.exit(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
