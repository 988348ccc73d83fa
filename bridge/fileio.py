"""Writing files: every file bridge writes (ONNX models and their weights, drawings, reports, saved state) goes
through here.

``atomic_write`` writes to a temporary file in the destination's folder (same filesystem) and renames it over the
target only once everything is written, so a reader, an error, a full disk, a Ctrl-C or a killed process leaves
the old file or the new one, never a part of one, and no temporary file.

Durability against a power loss or an operating system crash is opt-in, as it is for ``torch.save``,
``onnx.save`` and ``torch.onnx.export``, none of which sync: with ``BRIDGE_FSYNC=1`` in the environment each file
is synced to disk before its rename and its folder after, so the rename survives a power loss too. Syncing costs
the full write at disk speed (seconds for a large model on a slow disk) where the page cache otherwise absorbs it.

The new file gets the mode a plain ``open(path, "w")`` would give it: 0666 less the umask for a new file; a
replaced file keeps its mode, and its owner and group where this user may set them.

``hashed_write`` writes a file named after its content (a sha256, computed while the bytes stream through), for
the weights beside an ONNX model: the weights land under their own name before the model that refers to them is
replaced, so the pair changes together (bridge/backends/onnx.py).

The operating system's errors (disk full, no permission, read-only filesystem, missing folder, a folder where the
file should be) become a ``WriteError`` that names the path, the cause and what to do.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from typing import IO

from .errors import WriteError

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask. Linux shows it in /proc/self/status; elsewhere it is read by setting it and setting it
    back, with 0o077 in between, so a file another thread creates at that moment gets a stricter mode, never a
    looser one."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _advice(code: int | None, folder: str) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "The disk (or this user's quota) is full: free space there, or write to another disk."
    if code in (errno.EACCES, errno.EPERM):
        return "This user may not write there: change the folder's permissions, or write somewhere else."
    if code == errno.EROFS:
        return "The filesystem is mounted read-only: write to a writable one."
    if code == errno.ENOENT:
        return f"The folder {folder!r} does not exist: create it first (mkdir -p), or fix the path."
    if code == errno.EISDIR:
        return "That path is a folder: give a file name (inside it, for example)."
    if code in (errno.ENOTDIR, errno.EEXIST):  # EEXIST: making the folder found a file of that name
        return "A part of the path is a file, not a folder: fix the path."
    if code == errno.ENAMETOOLONG:
        return "The name is too long for this filesystem: use a shorter one."
    return "Check the path, the free space and the permissions, or write somewhere else."


def write_error(path: str, e: OSError, *, atomic: bool = True) -> WriteError:
    """``e``, an operating system error while writing ``path``, as a ``WriteError`` naming the path, the cause and
    what to do (raise it ``from e``)."""
    cause = e.strerror or str(e) or type(e).__name__
    code = f" ({errno.errorcode[e.errno]})" if e.errno in errno.errorcode else ""
    after = " Nothing was written there; a file that was already there is unchanged." if atomic else ""
    advice = _advice(e.errno, os.path.dirname(os.path.abspath(path)))
    return WriteError(f"cannot write {path!r}: {cause}{code}. {advice}" + after, errno=e.errno, filename=path)


@contextlib.contextmanager
def _oserrors(path: str, *, atomic: bool = True) -> Iterator[None]:
    """Operating system errors inside the block become ``WriteError``; everything else (KeyboardInterrupt too)
    passes through unchanged."""
    try:
        yield
    except WriteError:
        raise
    except OSError as e:
        raise write_error(path, e, atomic=atomic) from e


def _stat(path: str) -> os.stat_result | None:
    """The stat of the file ``path`` names (through links), None when there is none yet; ``WriteError`` when it is
    a folder."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:  # ENOTDIR: a file where a folder of the path should be; EACCES: a folder we cannot enter
        raise write_error(path, e) from e
    if stat.S_ISDIR(st.st_mode):
        e = IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        raise write_error(path, e) from e
    return st


def _like(like: str | os.PathLike | None, target: os.stat_result | None) -> os.stat_result | None:
    """Whose mode, owner and group a new file takes: ``like`` if it exists, else the file it replaces."""
    if like is not None:
        with contextlib.suppress(OSError):
            return os.stat(like)
    return target


def _create(path: str, dest: str, mode: str, encoding: str | None) -> IO:
    """A new temporary file (0600 until ``_adopt``) beside ``dest``, hidden and named after it; the file object's
    ``name`` is its path. ``path`` is the name errors give."""
    folder, stem = os.path.split(os.path.abspath(dest))
    stem = stem[:64]
    with _oserrors(path):
        while True:
            tmp = os.path.join(folder, f".{stem}.{secrets.token_hex(4)}.tmp")
            try:
                return open(tmp, mode, encoding=None if "b" in mode else encoding,
                            opener=lambda p, flags: os.open(p, flags | os.O_EXCL, 0o600))
            except FileExistsError:
                continue


def _adopt(fd: int, like: os.stat_result | None) -> None:
    """Give the temporary file the mode (owner, group) that writing the target in place would have kept."""
    if like is None:
        os.fchmod(fd, 0o666 & ~umask())
        return
    own = os.fstat(fd)
    if (own.st_uid, own.st_gid) != (like.st_uid, like.st_gid):
        try:
            os.fchown(fd, like.st_uid, like.st_gid)
        except PermissionError:  # not root: the group can still be kept when this user is in it
            with contextlib.suppress(PermissionError):
                os.fchown(fd, -1, like.st_gid)
    os.fchmod(fd, stat.S_IMODE(like.st_mode))  # after chown, which may clear set-id bits


def durable() -> bool:
    """Whether writes are synced to disk (``BRIDGE_FSYNC=1`` in the environment; read at each write)."""
    return os.environ.get("BRIDGE_FSYNC", "").strip().lower() in ("1", "true", "yes", "on")


def _commit(f: IO, dest: str) -> None:
    """The temporary file's bytes written out (on disk when ``durable()``), then renamed over ``dest`` (atomic on
    one filesystem)."""
    f.flush()
    if durable():
        os.fsync(f.fileno())
    f.close()
    os.replace(f.name, dest)


def _discard(f: IO) -> None:
    with contextlib.suppress(OSError):
        f.close()
    with contextlib.suppress(OSError):
        os.unlink(f.name)


def sync_folder(folder: str) -> None:
    """Make the renames in ``folder`` durable, when ``durable()``. Best effort: some filesystems cannot sync a
    folder, and the rename itself has already happened."""
    if not durable():
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, encoding: str = "utf-8",
                 like: str | os.PathLike | None = None) -> Iterator[IO]:
    """A file object (text for ``mode="w"``, binary for ``"wb"``) on a temporary file beside ``path``; when the
    block ends without an exception it is renamed over ``path`` (synced first when ``durable()``). On any
    exception (KeyboardInterrupt too) the temporary file is removed and an existing ``path`` is untouched.

    - The file object's ``name`` is the temporary path: once flushed, a checker can read the file there.
    - A symbolic link at ``path`` is written through, as ``open`` does: the file it points to is replaced.
    - ``path`` naming a FIFO or a device (``/dev/null``, ``/dev/stdout``) is written in place: it cannot be replaced.
    - Modes: a new file gets 0666 less the umask; a replaced one keeps its mode, owner and group (``like``: take
      them from this file instead, when it exists).
    - Operating system errors, in the block too, become ``WriteError`` naming ``path``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = os.fspath(path)
    target = _stat(path)
    if target is not None and not stat.S_ISREG(target.st_mode):
        with _oserrors(path, atomic=False), open(path, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
        return
    dest = os.path.realpath(path) if os.path.islink(path) else path
    folder = os.path.dirname(os.path.abspath(dest))
    f = _create(path, dest, mode, encoding)
    try:
        with _oserrors(path):
            _adopt(f.fileno(), _like(like, target))
            yield f
            _commit(f, dest)
    except BaseException:
        _discard(f)
        raise
    sync_folder(folder)


class HashedFile:
    """A binary file being written that hashes (sha256) what goes through ``write``. After ``hashed_write``'s block:
    ``name`` is its path and ``created`` says whether that name is new (False: the same content was already
    there under it).

    The hash runs on a thread of its own, beside the writes (both release the GIL: hashing 2.5 GB took 1.3 s
    after the writes, now during them), so what is written must stay unchanged until ``digest()``."""

    def __init__(self, f: IO):
        from concurrent.futures import ThreadPoolExecutor

        self._file, self._sha = f, hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="bridge-sha256")  # one thread: bytes in order
        self._pending: list = []
        self.name: str | None = None
        self.created = False

    def write(self, data) -> int:
        self._pending.append(self._hasher.submit(self._sha.update, data))
        if len(self._pending) > 64:  # let no backlog of finished updates build up
            self._pending = [p for p in self._pending if not p.done()]
        return self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()

    def close_hasher(self) -> None:
        """Wait for the hash to take every byte written (raising what it raised); no more writes after."""
        self._hasher.shutdown(wait=True)
        for p in self._pending:
            p.result()
        self._pending = []

    def digest(self) -> str:
        """The first 16 hex digits of the sha256 of what was written: 64 bits, so two different contents do not
        get one name."""
        self.close_hasher()
        return self._sha.hexdigest()[:16]


@contextlib.contextmanager
def hashed_write(folder: str | os.PathLike, template: str, *,
                 like: str | os.PathLike | None = None) -> Iterator[HashedFile]:
    """A binary file named after its content: write to the yielded ``HashedFile``; when the block ends it is renamed
    to ``template.format(digest)`` in ``folder`` (a file already there under that name has the same bytes), synced
    with its folder first when ``durable()``, so a file that refers to it can be written next. On any exception
    nothing is left. ``like``: the file whose mode, owner and group it takes (else 0666 less the umask)."""
    folder = os.fspath(folder)
    label = os.path.join(folder, template.format("<sha256>"))  # the name, in messages, before it is known
    f = _create(label, os.path.join(folder, template.format("new")), "wb", None)
    out = HashedFile(f)
    try:
        with _oserrors(label):
            _adopt(f.fileno(), _like(like, None))
            yield out
            final = os.path.join(folder, template.format(out.digest()))
            out.created = not os.path.lexists(final)
            _commit(f, final)
            out.name = final
    except BaseException:
        with contextlib.suppress(Exception):  # the error that stopped the block is the one to raise
            out.close_hasher()
        _discard(f)
        raise
    sync_folder(folder)
