"""Progress bars (rich) for long work: big exports, zoo runs, benchmark loops.

A bar is shown only where a person is watching: when stderr is a terminal, or when asked
(``BRIDGE_PROGRESS=1``, or ``enabled=True``); ``BRIDGE_PROGRESS=0`` turns bars off everywhere. Pipes, logs and
tests never see one, and where no bar is shown the iterable is handed back untouched: nothing per item.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def wanted(enabled: bool | None = None) -> bool:
    """Whether to show progress: ``enabled`` if given, else ``BRIDGE_PROGRESS`` if set, else stderr is a tty."""
    if enabled is not None:
        return enabled
    env = os.environ.get("BRIDGE_PROGRESS")
    if env is not None:
        return env not in ("", "0", "false", "no")
    return sys.stderr.isatty()


def track(items: Iterable[T], description: str, *, total: int | None = None, min_total: int = 0,
          enabled: bool | None = None) -> Iterable[T]:
    """``items``, with a progress bar on stderr when ``wanted(enabled)`` and there are at least ``min_total``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not wanted(enabled) or (total is not None and total < min_total):
        return items
    return _tracked(items, description, total)


def _tracked(items: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def status(description: str, *, enabled: bool | None = None):
    """A spinner on stderr while a step with no count runs (e.g. graphviz laying out a big graph)."""
    if not wanted(enabled):
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(description):
        yield
