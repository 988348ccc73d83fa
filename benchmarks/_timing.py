"""What the benchmark scripts share: the median wall time of repeated calls, the options every zoo benchmark
takes, and how results are written."""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time


def median_time(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls of ``fn``."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def zoo_arguments(doc: str, quick: str = "fewer repetitions",
                  models: str = "comma-separated zoo names") -> argparse.ArgumentParser:
    """A parser with the options every zoo benchmark takes: --quick, --models, --json, --threads."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--models", help=models)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return ap


def zoo_names(models: str | None, exclude=("slow",)) -> list[str]:
    """The zoo entries asked for with --models, else every entry without an ``exclude`` tag."""
    from bridge import zoo

    return models.split(",") if models else [e.name for e in zoo.entries(exclude_tags=exclude)]


def write_json(path: str | None, **results) -> None:
    """The results, with the date, machine and torch version, as JSON at ``path`` (nothing when None)."""
    if not path:
        return
    import torch

    with open(path, "w") as fh:
        json.dump({"date": datetime.date.today().isoformat(), "machine": platform.machine(),
                   "python": platform.python_version(), "torch": torch.__version__, **results}, fh, indent=1)


def cell(v, spec: str) -> str:
    """A table cell: ``v`` formatted with ``spec``, or "-" when there is no figure."""
    return "-" if v is None else format(v, spec)


def median_of(rows: list[dict], key: str):
    """Median of ``row[key]`` over the rows that have a figure, or None."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def one_line(e: BaseException, width: int = 120) -> str:
    """``Type: first line of the message`` of a failure, for a results row."""
    text = str(e)
    return f"{type(e).__name__}: {text.splitlines()[0][:width] if text.strip() else ''}"


def print_failures(console, rows: list[dict], tools, verb: str = "failed") -> None:
    """One line per ``row[f"{tool}_error"]``: which tool failed on which model, and why (printed as text)."""
    for r in rows:
        for k in tools:
            if r.get(f"{k}_error"):
                console.print(f"  {r['model']}: {k}{' ' + verb if verb else ''}: {r[f'{k}_error']}", markup=False)
