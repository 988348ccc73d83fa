"""Progress on stderr for long work: big exports and traces, drawings, the conformance run, benchmark loops.

A job is one line on stderr (``exporting to ONNX: lowering ━━━━━━ 1,234/3,000 0:00:02``) that names its current
step, with a bar where the step has a count (nodes, bytes) and a moving bar where it has none. The line appears
only where a person is watching and the work is long:

- when stderr is a terminal (not ``TERM=dumb``), or when asked (``BRIDGE_PROGRESS=1``, or ``enabled=True``);
  ``BRIDGE_PROGRESS=0`` turns progress off everywhere. Pipes, files, CI logs and tests never see it;
- once the job has run ``DELAY`` seconds: quick work shows nothing, and the line goes when the job ends.

Where no line can appear, nothing is set up: ``job`` yields at once, ``track`` hands its iterable back untouched
(no per-item cost), ``step`` returns. Jobs nest: a job started inside another (a trace inside an export) becomes
a step of the outer one, so long work shows one line. Progress never writes to stdout.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

DELAY = 1.0  # seconds a job runs before its line appears

# the running job and how deep in nested jobs the code now running is
_current: contextvars.ContextVar[tuple["_Job", int] | None] = contextvars.ContextVar("bridge_progress", default=None)


def wanted(enabled: bool | None = None) -> bool:
    """Whether to show progress: ``enabled`` if given, else ``BRIDGE_PROGRESS`` if set, else whether stderr is a
    terminal (and not a dumb one)."""
    if enabled is not None:
        return enabled
    env = os.environ.get("BRIDGE_PROGRESS")
    if env is not None:
        return env not in ("", "0", "false", "no")
    try:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


@contextlib.contextmanager
def job(title: str, *, enabled: bool | None = None):
    """A long job: its line on stderr appears after ``DELAY`` seconds (where ``wanted(enabled)``) and goes when
    it ends. Inside another job it is a step of that one (a detail of a counted step: the count stays)."""
    cur = _current.get()
    if cur is not None:
        j, depth = cur
        if title != j.title:
            j.step(title, depth + 1)
        token = _current.set((j, depth + 1))
        try:
            yield
        finally:
            _current.reset(token)
        return
    if not wanted(enabled):
        yield
        return
    j = _Job(title)
    token = _current.set((j, 0))
    try:
        yield
    finally:
        try:
            _current.reset(token)
        except ValueError:  # ended in another context (a generator closed elsewhere)
            _current.set(None)
        j.close()


def step(name: str) -> None:
    """The running job (if any) is now at step ``name`` (one with no count)."""
    cur = _current.get()
    if cur is not None:
        cur[0].step(name, cur[1])


def track(items: Iterable[T], description: str, *, total: int | None = None, min_total: int = 0,
          enabled: bool | None = None, size: Callable[[T], int] | None = None) -> Iterable[T]:
    """``items``, counted as a step of the running job, or as a job of their own where ``wanted(enabled)`` and
    there are at least ``min_total``. ``size(item)``: bytes per item, for a step counted in bytes (``total``
    then gives the bytes in all); the count is of items otherwise."""
    if total is None and size is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    cur = _current.get()
    if cur is None and (not wanted(enabled) or (total is not None and total < min_total)):
        return items
    return _tracked(items, description, total, size, cur)


def _tracked(items: Iterable[T], description: str, total: int | None, size, cur) -> Iterator[T]:
    with job(description, enabled=True) if cur is None else contextlib.nullcontext():
        j, depth = cur or _current.get()
        key = j.step(None if cur is None else description, depth, total=total,
                     unit="bytes" if size is not None else None)
        try:
            for item in items:
                yield item
                j.advance(key, size(item) if size is not None else 1)
        finally:
            j.end(key)


class _Job:
    """The line of one job: a rich ``Progress`` with one task, started by a timer after ``DELAY`` seconds.

    A step replaces the task (a fresh count, or none), except that while a counted step runs, steps of jobs
    nested deeper only name what each item is doing (``benchmark ━━━ 3/40 0:00:12 · lowering``)."""

    def __init__(self, title: str):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self.title = title
        self.start = time.monotonic()
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), *_columns(self),
                            TextColumn("{task.fields[detail]}"), console=Console(stderr=True), transient=True,
                            redirect_stdout=False)
        self.task = self.bar.add_task(title, total=None, detail="")
        self.counted: int | None = None  # the depth of the counted step running, if any
        self._lock = threading.Lock()
        self._done = False
        self._timer = None
        if DELAY <= 0:
            self._show()
        else:
            self._timer = threading.Timer(DELAY, self._show)
            self._timer.daemon = True
            self._timer.start()

    def _show(self) -> None:
        with self._lock:
            if not self._done:
                self.bar.start()

    def step(self, name: str | None, depth: int, *, total: int | None = None, unit: str | None = None):
        """Step ``name`` (None: the job's title alone) at nesting ``depth``; returns its task."""
        if self.counted is not None and depth > self.counted:
            self.bar.update(self.task, detail=f"\u00b7 {name}" if name else "")
            self._refresh()
            return None  # its count is not shown
        with self.bar._lock:  # one task shown at a time: the line never draws two
            old = self.task
            self.task = self.bar.add_task(self.title if name is None else f"{self.title}: {name}", total=total,
                                          unit=unit, detail="", visible=False)
            self.bar.remove_task(old)
            self.bar.update(self.task, visible=True)
        self.counted = depth if total is not None else None
        self._refresh()
        return self.task

    def _refresh(self) -> None:
        """Show a new step at once (the line redraws 10 times a second; a step can be shorter)."""
        if self.bar.live.is_started:
            self.bar.refresh()

    def advance(self, task, n: int) -> None:
        if task is not None:
            self.bar.advance(task, n)

    def end(self, task) -> None:
        """A counted step is over: later steps replace it."""
        if task is not None and task == self.task:
            self.counted = None
            self._refresh()  # its last count

    def close(self) -> None:
        with self._lock:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()
            self.bar.stop()


def _columns(j: _Job) -> tuple:
    """The count (``1,234/3,000``, or ``1.2/4.0 GB`` for a step in bytes) and the job's elapsed time."""
    from rich.filesize import decimal
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Count(ProgressColumn):
        def render(self, task):
            if task.total is None:
                return Text("")
            if task.fields.get("unit") == "bytes":
                return Text(f"{decimal(int(task.completed))}/{decimal(int(task.total))}")
            return Text(f"{int(task.completed):,}/{int(task.total):,}")

    class Elapsed(ProgressColumn):
        def render(self, task):
            s = int(time.monotonic() - j.start)
            return Text(f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}", style="progress.elapsed")

    return Count(), Elapsed()
