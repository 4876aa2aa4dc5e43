"""Progress reporting that stages use without knowing about the terminal.

A stage calls ``ctx.reporter.task("tracking", total=n)`` and ``.advance()``; the CLI decides
whether that draws a rich progress bar or nothing (``--quiet``, ``--json``, no TTY).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **fields) -> None:
        pass


class Reporter:
    """Progress bars and info lines on stderr; silent when ``quiet``."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[object]:
        if self.quiet:
            yield _NullTask()
            return
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=not sys.stderr.isatty(),
        )
        with progress:
            tid = progress.add_task(description, total=total)

            class _Task:
                def advance(self, n: int = 1) -> None:
                    progress.advance(tid, n)

                def update(self, **fields) -> None:
                    progress.update(tid, **fields)

            yield _Task()


QUIET = Reporter(quiet=True)
