"""Progress bars for long work: Rich bars on a terminal, silent elsewhere (deployments log)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    """Creates one bar per stage when enabled; a no-op otherwise."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """Yield ``tick(n)`` that advances a bar of ``total`` steps."""
        if not self.enabled or total <= 0:
            yield lambda n=1: None
            return
        bar = RichProgress(TextColumn("[bold]{task.description:<12}"), BarColumn(),
                           MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                           console=Console(stderr=True), transient=False)
        with bar:
            tid = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(tid, n)
