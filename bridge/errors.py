"""Typed errors. Each names the node, its module scope and the stage, and says what to do."""
from __future__ import annotations

import os


class BridgeError(Exception):
    """Base class of every error bridge raises on purpose."""


class TraceError(BridgeError):
    """Neither frontend could turn the model into a graph.

    ``source`` is the user's ``file:line`` the failure points at (or None), ``causes`` maps each
    frontend tried to the exception it raised.
    """

    def __init__(self, message: str, *, source: str | None = None, causes: dict | None = None):
        super().__init__(message)
        self.source = source
        self.causes = dict(causes or {})


class InputError(BridgeError, ValueError):
    """Inputs given to a graph do not match what it was traced with (count, names, rank, dtype)."""


class GraphError(BridgeError):
    """The IR broke one of its invariants (``Graph.check``) or a mutation was refused."""


class UnsupportedOpError(BridgeError):
    """One or more nodes have no lowering for the requested target. ``nodes`` lists all of them."""

    def __init__(self, message: str, nodes=()):
        super().__init__(message)
        self.nodes = list(nodes)


class OnnxError(BridgeError):
    """An ONNX file or model cannot be read or used (corrupt, truncated, wrong inputs)."""


class ViewError(BridgeError):
    """A drawing cannot be made: an unknown file suffix, a bad depth, or the graphviz ``dot`` binary is
    missing for ``.svg``/``.png`` (install graphviz: ``apt-get install graphviz``)."""


class TransformError(BridgeError):
    """A transformation cannot be applied: a pattern or replacement that does not trace, a replacement
    module that does not fit the layer it replaces, a bad ``stages=``/``balance=`` for ``to_sequential``."""


class WriteError(BridgeError, OSError):
    """A file cannot be written (disk full, no permission, read-only filesystem, missing folder, a folder where the
    file should be). The message names the path, the cause and what to do; ``errno`` and ``filename`` are the
    operating system's, and ``__cause__`` is its original error. Nothing was left behind: an existing file at that
    path is unchanged (``bridge.fileio``)."""

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno, self.filename = errno, filename
        self.strerror = None if errno is None else os.strerror(errno)

    def __str__(self) -> str:  # OSError's own would print "[Errno N] strerror: filename" instead of the message
        return self.args[0]
