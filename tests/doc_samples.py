"""The sample outputs in the docs, produced by running them: what README.md and docs/*.md show a command or a
snippet printing is what it prints now (tests/test_docs.py runs the check).

A page's samples are its fenced blocks of three kinds, run in page order in one temporary folder that holds a copy
of examples/, so a file one command writes is there for the next command on the page:

- ```` ```console ````: ``$ bridge ...`` lines, each followed by what it prints (stdout and stderr, as on a
  terminal). A command that exits with another status than 0 says so at the end of its line,
  ``$ bridge diff a.onnx b.onnx  # exit status 3``; any other status is an error, never written into a page.
- ```` ```text title="Output" ````: what the nearest ```` ```python ```` block above it prints.
- ```` ```bash ````: its ``bridge ...`` lines run and must succeed; they show no output (for commands whose output
  depends on the machine, as ``bridge verify``'s float differences do). Other lines (pip, pytest) are not run.

Each command and each python block runs in a fork of this process (bridge and torch imported once), so it starts
as a fresh ``bridge`` process would; the temporary folder's path is written as a relative path.

    python -m tests.doc_samples                   # check every page: name each block that differs, exit 1
    python -m tests.doc_samples --write           # rewrite the blocks that differ, in place
    python -m tests.doc_samples docs/cli.md ...   # only these pages
"""
from __future__ import annotations

import argparse
import difflib
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
TIMEOUT_S = 300  # one command or block; a sample is meant to take seconds

_FENCE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.S | re.M)
_STATUS = re.compile(r"#\s*exit status (\d+)\s*$")


class SampleError(Exception):
    """A sample that cannot be produced: a command failed, a python block raised, a block is malformed."""


@dataclass
class Block:
    """One fenced block: its kind (console, output, bash, python), where its body lies in the page, the body."""

    kind: str
    line: int          # of the opening fence, 1-based
    start: int         # body offsets in the page text
    end: int
    body: str
    new: str | None = None  # the body as the commands print it now (console and output blocks)
    skipped: list[str] = field(default_factory=list)


def blocks(text: str) -> list[Block]:
    """The page's sample blocks and python blocks, in order."""
    out = []
    for m in _FENCE.finditer(text):
        lang, _, attrs = m.group("info").strip().partition(" ")
        kind = {"console": "console", "bash": "bash", "python": "python"}.get(lang)
        if lang == "text" and re.search(r'\btitle="Output"', attrs):
            kind = "output"
        if kind:
            out.append(Block(kind, text.count("\n", 0, m.start()) + 1, m.start("body"), m.end("body"),
                             m.group("body")))
    return out


def console_commands(body: str) -> list[tuple[str, str]]:
    """A console block as (``$`` line without the prompt, the output shown after it)."""
    cmds: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            cmds.append((line[2:], []))
        elif not cmds:
            raise SampleError(f"a console block starts with {line!r}, not a '$ ' command line")
        else:
            cmds[-1][1].append(line)
    return [(c, "\n".join(lines)) for c, lines in cmds]


def bridge_argv(line: str) -> tuple[list[str], int]:
    """The arguments after ``bridge`` of a command line, and the exit status its ``# exit status N`` comment gives
    (0 without one)."""
    m = _STATUS.search(line)
    argv = shlex.split(line, comments=True)
    if not argv or argv[0] != "bridge":
        raise SampleError(f"{line!r}: a sample command is a `bridge ...` line")
    return argv[1:], int(m.group(1)) if m else 0


def _unavailable(argv: list[str]) -> str | None:
    """Why a command cannot run on this machine (a tool it needs is missing), else None."""
    if any(a.endswith((".svg", ".png")) for a in argv) and shutil.which("dot") is None:
        return "graphviz's dot is not installed"
    return None


def _in_fork(fn, cwd: str) -> tuple[int, str]:
    """Run ``fn()`` (returns an exit status) in a forked child whose stdout and stderr go to one file, as a
    terminal shows them; its exit status and what it printed."""
    with tempfile.TemporaryFile() as out:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            status = 1
            try:
                import signal

                signal.alarm(TIMEOUT_S)
                os.chdir(cwd)
                os.dup2(out.fileno(), 1)
                os.dup2(out.fileno(), 2)
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                status = fn()
            except SystemExit as e:  # argparse's usage errors
                status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - shown in the sample's output, and the status says it failed
                traceback.print_exc()
                status = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        _, wait = os.waitpid(pid, 0)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if os.WIFSIGNALED(wait):
        return -os.WTERMSIG(wait), text + f"\n(killed by signal {os.WTERMSIG(wait)}, after {TIMEOUT_S} s at most)"
    return os.WEXITSTATUS(wait), text


def run_bridge(argv: list[str], cwd: str) -> tuple[int, str]:
    """``bridge ARGV`` in ``cwd``: exit status and output."""
    if not hasattr(os, "fork"):
        r = subprocess.run([sys.executable, "-m", "bridge", *argv], cwd=cwd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S)
        return r.returncode, r.stdout

    def cli() -> int:
        from bridge.cli import main

        sys.argv = ["bridge", *argv]
        return main(argv)

    return _in_fork(cli, cwd)


def run_python(code: str, name: str, cwd: str) -> tuple[int, str]:
    """A python block, run alone as a script in ``cwd``: exit status and output."""
    if not hasattr(os, "fork"):
        r = subprocess.run([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=TIMEOUT_S)
        return r.returncode, r.stdout

    def script() -> int:
        exec(compile(code, name, "exec"), {"__name__": "__main__"})
        return 0

    return _in_fork(script, cwd)


def _name(path: str) -> str:
    """A page as messages name it: relative to the repository when it lies there."""
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def _normalize(text: str, folder: str) -> str:
    """Output as a page shows it: the temporary folder as a relative path, no trailing spaces or blank lines."""
    for f in {os.path.realpath(folder), folder}:
        text = text.replace(f + os.sep, "").replace(f, ".")
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")


def run_page(path: str) -> tuple[list[Block], list[str]]:
    """Run a page's samples in order; its sample blocks (``new`` filled in) and the errors met."""
    text = open(path, encoding="utf-8").read()
    page = _name(path)
    found, errors = blocks(text), []
    if not any(b.kind in ("console", "output", "bash") for b in found):
        return [], []
    with tempfile.TemporaryDirectory(prefix="doc_samples_") as folder:
        shutil.copytree(os.path.join(ROOT, "examples"), os.path.join(folder, "examples"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        last_python = None
        for b in found:
            where = f"{page}:{b.line}"
            try:
                if b.kind == "python":
                    last_python = b
                elif b.kind == "output":
                    if last_python is None:
                        raise SampleError("an Output block with no python block above it")
                    status, out = run_python(last_python.body, f"<{page}:{last_python.line}>", folder)
                    if status != 0:
                        raise SampleError(f"the python block at line {last_python.line} failed:\n{out}")
                    b.new = _normalize(out, folder) + "\n"
                elif b.kind == "console":
                    shown = []
                    for line, old in console_commands(b.body):
                        argv, want = bridge_argv(line)
                        if (why := _unavailable(argv)) is not None:
                            b.skipped.append(f"{line} ({why})")
                            shown.append("\n".join(["$ " + line] + ([old] if old else [])))
                            continue
                        status, out = run_bridge(argv, folder)
                        if status != want:
                            raise SampleError(f"`bridge {shlex.join(argv)}` exited with status {status}, the page "
                                              f"says {want} (add or fix '# exit status N' if that is right):\n{out}")
                        out = _normalize(out, folder)
                        shown.append("\n".join(["$ " + line] + ([out] if out else [])))
                    b.new = "\n".join(shown) + "\n"
                elif b.kind == "bash":
                    for line in b.body.splitlines():
                        if not line.strip().startswith("bridge "):
                            continue
                        argv, want = bridge_argv(line.strip())
                        if (why := _unavailable(argv)) is not None:
                            b.skipped.append(f"{line} ({why})")
                            continue
                        status, out = run_bridge(argv, folder)
                        if status != want:
                            raise SampleError(f"`bridge {shlex.join(argv)}` exited with status {status}:\n{out}")
            except SampleError as e:
                errors.append(f"{where}: {b.kind} block: {e}")
    return [b for b in found if b.kind != "python"], errors


def differences(path: str, samples: list[Block]) -> list[str]:
    """Each sample block whose body is not what it prints now, named by page and line, with a diff."""
    page = _name(path)
    out = []
    for b in samples:
        if b.new is not None and b.new != b.body:
            diff = difflib.unified_diff(b.body.splitlines(), b.new.splitlines(), "the page", "what it prints now",
                                        lineterm="")
            out.append(f"{page}:{b.line}: this {b.kind} block is not what it prints now:\n" + "\n".join(diff))
    return out


def rewrite(path: str, samples: list[Block]) -> bool:
    """Write the blocks' new bodies into the page; whether it changed."""
    text = open(path, encoding="utf-8").read()
    new = text
    for b in sorted(samples, key=lambda b: -b.start):
        if b.new is not None:
            new = new[:b.start] + b.new + new[b.end:]
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.doc_samples", description=__doc__.split("\n\n")[0])
    ap.add_argument("pages", nargs="*", help="pages to run (default: README.md and docs/*.md)")
    ap.add_argument("--write", action="store_true", help="rewrite the sample blocks that differ")
    ns = ap.parse_args(argv)
    pages = [os.path.abspath(p) for p in ns.pages] or PAGES
    import bridge.cli  # noqa: F401 - imported once, before the forks, with what most samples import later
    import onnx  # noqa: F401
    import torch._dynamo  # noqa: F401

    failed = False
    for path in pages:
        samples, errors = run_page(path)
        for b in samples:
            for s in b.skipped:
                print(f"{_name(path)}:{b.line}: skipped {s}", file=sys.stderr)
        for e in errors:
            print(e, end="\n\n")
        failed |= bool(errors)
        if ns.write:
            if rewrite(path, samples):
                print(f"rewrote {_name(path)}")
        else:
            diffs = differences(path, samples)
            for d in diffs:
                print(d, end="\n\n")
            failed |= bool(diffs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
