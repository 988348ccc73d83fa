"""Nested python structures of values (a model's outputs): flatten to leaves and build back.

A spec is a small tuple tree:
  ("leaf", i) | ("const", v) | ("tuple", [s...]) | ("list", [s...]) | ("dict", cls, keys, [s...])
  | ("namedtuple", cls, [s...]) | ("structseq", cls, [s...]) | ("dataclass", cls, names, [s...])
  | ("pytree", cls, context, [s...], child names)
Dataclasses (HuggingFace ``ModelOutput`` included) are rebuilt with ``cls(**fields)``. Any other class registered
with torch's pytree (``torch.utils._pytree.register_pytree_node``, as torch.export asks of a container it should see
into) is taken apart and rebuilt by its registered functions: HuggingFace's key/value caches (``DynamicCache``,
registered here on first sight through transformers' own ``register_dynamic_cache_export_support``) included.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable


_ATOMS = frozenset({int, float, bool, str, type(None)})  # leaves of no structure (unless ``is_leaf`` takes them)


def flatten(obj: Any, is_leaf: Callable[[Any], bool]) -> tuple[list, tuple]:
    leaves: list = []
    return leaves, _flatten(obj, is_leaf, leaves)


def _flatten(o: Any, is_leaf: Callable[[Any], bool], leaves: list) -> tuple:
    """``flatten``'s walk, a module-level function: a recursive closure would be a reference cycle holding the
    leaves (tensors) until the cyclic collector runs, and an export pauses it."""
    if is_leaf(o):
        leaves.append(o)
        return ("leaf", len(leaves) - 1)
    t = type(o)
    if t in _ATOMS:
        return ("const", o)
    if t is tuple:
        return ("tuple", [_flatten(v, is_leaf, leaves) for v in o])
    if t is list:
        return ("list", [_flatten(v, is_leaf, leaves) for v in o])
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        names = [f.name for f in dataclasses.fields(o)]
        return ("dataclass", type(o), tuple(names), [_flatten(getattr(o, n), is_leaf, leaves) for n in names])
    if isinstance(o, tuple) and hasattr(o, "_fields"):
        return ("namedtuple", type(o), [_flatten(v, is_leaf, leaves) for v in o])
    if isinstance(o, tuple) and hasattr(o, "n_fields"):  # torch.return_types (structseq)
        return ("structseq", type(o), [_flatten(v, is_leaf, leaves) for v in o])
    if isinstance(o, tuple):
        return ("tuple", [_flatten(v, is_leaf, leaves) for v in o])
    if isinstance(o, list):
        return ("list", [_flatten(v, is_leaf, leaves) for v in o])
    if isinstance(o, dict):
        keys = list(o.keys())
        return ("dict", type(o), tuple(keys), [_flatten(o[k], is_leaf, leaves) for k in keys])
    node = pytree_node(type(o))
    if node is not None:
        children, context = node.flatten_fn(o)
        return ("pytree", type(o), context, [_flatten(c, is_leaf, leaves) for c in children],
                _child_names(node, o, len(children)))
    return ("const", o)


def _child_names(node, o: Any, n: int) -> tuple[str, ...]:
    """Names of a pytree-registered object's children, from its keys where it registered them (``key_cache``),
    else their positions."""
    if getattr(node, "flatten_with_keys_fn", None) is not None:
        try:
            keys = [k for k, _ in node.flatten_with_keys_fn(o)[0]]
            names = tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", i)))) for i, k in enumerate(keys))
            if len(names) == n:
                return names
        except Exception:  # noqa: BLE001 - a registration whose keys cannot be read: positions serve
            pass
    return tuple(str(i) for i in range(n))


def pytree_node(cls: type):
    """torch's pytree registration of ``cls`` (None for a class it does not know, and for the ones this module takes
    apart itself). A HuggingFace cache class is registered on first sight, as transformers does for torch.export."""
    if cls in (tuple, list, dict) or cls.__module__ == "builtins":
        return None
    from torch.utils import _pytree

    node = _pytree.SUPPORTED_NODES.get(cls)
    if node is None and cls.__module__ == "transformers.cache_utils" and cls.__name__ == "DynamicCache":
        try:
            from transformers.integrations.executorch import register_dynamic_cache_export_support

            register_dynamic_cache_export_support()
        except ImportError:  # a transformers without it: the cache stays an object bridge cannot see into
            return None
        node = _pytree.SUPPORTED_NODES.get(cls)
    return node


def pytree_children(o: Any) -> list:
    """The children of a pytree-registered object, as its registration flattens it (generated code reads a cache
    input's tensors so)."""
    return list(pytree_node(type(o)).flatten_fn(o)[0])


def pytree_build(cls: type, context: Any, children: list) -> Any:
    """A pytree-registered object rebuilt from its children."""
    return pytree_node(cls).unflatten_fn(children, context)


def hidden_leaves(spec: tuple, is_leaf: Callable[[Any], bool], depth: int = 4) -> list[tuple[str, str]]:
    """``(where, type name)`` of every constant of ``spec`` that holds a leaf out of sight (a set of tensors, a
    plain object with a tensor attribute): such a structure would be rebuilt holding the trace-time values."""
    found: list[tuple[str, str]] = []

    def holds(o, d) -> bool:
        if is_leaf(o):
            return True
        if d == 0 or isinstance(o, (str, bytes, int, float, complex, bool, type)) or o is None:
            return False
        if isinstance(o, (set, frozenset, tuple, list)):
            return any(holds(x, d - 1) for x in o)
        if isinstance(o, dict):
            return any(holds(x, d - 1) for x in o.values())
        attrs = getattr(o, "__dict__", None)
        slots = [getattr(o, n, None) for c in type(o).__mro__ for n in getattr(c, "__slots__", ())
                 if isinstance(n, str)]
        return any(holds(x, d - 1) for x in list((attrs or {}).values()) + slots)

    def go(sp, where):
        kind = sp[0]
        if kind == "const":
            if holds(sp[1], depth):
                found.append((where, type(sp[1]).__name__))
        elif kind in ("tuple", "list"):
            for i, s in enumerate(sp[1]):
                go(s, f"{where}[{i}]")
        elif kind in ("namedtuple", "structseq"):
            for i, s in enumerate(sp[2]):
                go(s, f"{where}[{i}]")
        elif kind in ("dict", "dataclass"):
            for k, s in zip(sp[2], sp[3]):
                go(s, f"{where}[{k!r}]" if kind == "dict" else f"{where}.{k}")
        elif kind == "pytree":
            for k, s in zip(sp[4], sp[3]):
                go(s, f"{where}.{k}")

    go(spec, "output")
    return found


def unflatten(spec: tuple, leaves) -> Any:
    kind = spec[0]
    if kind == "leaf":
        return leaves[spec[1]]
    if kind == "const":
        return spec[1]
    if kind == "tuple":
        return tuple(unflatten(s, leaves) for s in spec[1])
    if kind == "list":
        return [unflatten(s, leaves) for s in spec[1]]
    if kind == "namedtuple":
        return spec[1](*(unflatten(s, leaves) for s in spec[2]))
    if kind == "structseq":
        return spec[1](tuple(unflatten(s, leaves) for s in spec[2]))
    if kind == "dict":
        cls, keys, subs = spec[1], spec[2], spec[3]
        items = [(k, unflatten(s, leaves)) for k, s in zip(keys, subs)]
        return dict(items) if cls is dict else cls(items)
    if kind == "dataclass":
        cls, names, subs = spec[1], spec[2], spec[3]
        return cls(**{n: unflatten(s, leaves) for n, s in zip(names, subs)})
    if kind == "pytree":
        return pytree_build(spec[1], spec[2], [unflatten(s, leaves) for s in spec[3]])
    raise ValueError(f"unknown structure kind {kind!r}")


def map_leaves(spec: tuple, fn: Callable[[int], tuple]) -> tuple:
    """Return a spec whose every ("leaf", i) is replaced by ``fn(i)`` (itself a spec)."""
    kind = spec[0]
    if kind == "leaf":
        return fn(spec[1])
    if kind == "const":
        return spec
    if kind in ("tuple", "list"):
        return (kind, [map_leaves(s, fn) for s in spec[1]])
    if kind in ("namedtuple", "structseq"):
        return (kind, spec[1], [map_leaves(s, fn) for s in spec[2]])
    if kind == "dict":
        return (kind, spec[1], spec[2], [map_leaves(s, fn) for s in spec[3]])
    if kind == "dataclass":
        return (kind, spec[1], spec[2], [map_leaves(s, fn) for s in spec[3]])
    if kind == "pytree":
        return (kind, spec[1], spec[2], [map_leaves(s, fn) for s in spec[3]], spec[4])
    raise ValueError(f"unknown structure kind {kind!r}")


def describe(spec: tuple, leaf_names) -> str:
    """Readable form: ``(out0, {'logits': out1})``."""
    kind = spec[0]
    if kind == "leaf":
        return leaf_names[spec[1]]
    if kind == "const":
        return repr(spec[1])
    if kind == "tuple":
        inner = ", ".join(describe(s, leaf_names) for s in spec[1])
        return f"({inner}{',' if len(spec[1]) == 1 else ''})"
    if kind == "list":
        return "[" + ", ".join(describe(s, leaf_names) for s in spec[1]) + "]"
    if kind in ("namedtuple", "structseq"):
        return spec[1].__name__ + "(" + ", ".join(describe(s, leaf_names) for s in spec[2]) + ")"
    if kind == "dict":
        return "{" + ", ".join(f"{k!r}: {describe(s, leaf_names)}" for k, s in zip(spec[2], spec[3])) + "}"
    if kind == "dataclass":
        return spec[1].__name__ + "(" + ", ".join(
            f"{n}={describe(s, leaf_names)}" for n, s in zip(spec[2], spec[3])) + ")"
    if kind == "pytree":
        return spec[1].__name__ + "(" + ", ".join(
            f"{n}={describe(s, leaf_names)}" for n, s in zip(spec[4], spec[3])) + ")"
    raise ValueError(kind)


def extract(spec: tuple, obj: Any) -> dict[int, Any]:
    """The leaves of ``obj`` at the ("leaf", i) positions of ``spec`` (``obj`` has that structure)."""
    out: dict[int, Any] = {}
    _extract(spec, obj, out)
    return out


def _extract(sp: tuple, o: Any, out: dict) -> None:
    """``extract``'s walk (module-level: no reference cycle holding the leaves, as for ``_flatten``)."""
    kind = sp[0]
    if kind == "leaf":
        out[sp[1]] = o
    elif kind in ("tuple", "list"):
        for s_, x in zip(sp[1], o):
            _extract(s_, x, out)
    elif kind in ("namedtuple", "structseq"):
        for s_, x in zip(sp[2], o):
            _extract(s_, x, out)
    elif kind == "dict":
        for k, s_ in zip(sp[2], sp[3]):
            _extract(s_, o[k], out)
    elif kind == "dataclass":
        for k, s_ in zip(sp[2], sp[3]):
            _extract(s_, getattr(o, k), out)
    elif kind == "pytree":
        for s_, x in zip(sp[3], pytree_children(o)):
            _extract(s_, x, out)
