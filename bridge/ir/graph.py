"""The bridge IR: a Graph of Nodes over Values.

- ``Value``: one edge. A tensor (``TensorSpec``) or a run-time python scalar (``ScalarSpec``). Graph
  inputs, weights/buffers/constants (``const`` set) and node outputs are all Values. A constant a pass computes
  from others (a folded weight) may be ``Deferred``: computed when first read.
- ``Node``: one call of a canonical op from the registry. ``args`` maps the op's parameter names to
  Values, (nested) lists of Values, or python constants. ``scope`` is the module stack it came from.
- ``Graph``: inputs, nodes in topological order, outputs with the model's output structure.
- Regions: a control-flow node (``cond``, ``while_loop``, ``scan``, ``map``) owns subgraphs, each a ``Graph``
  held in one of its ``args`` (``true_fn``, ``body_fn``, ...). A region is closed: it reads only its own inputs
  and constants, so what it needs from outside comes in through the node's operands (as torch.export lifts
  them), and use-lists never cross a region's boundary. ``Node.regions`` lists them; ``Graph.walk`` visits
  nested nodes.

Use-lists are kept by the mutation API (``add_node``, ``set_args``, ``replace_all_uses``,
``erase_node``); ``check()`` verifies every invariant.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Iterator

import torch

from ..errors import GraphError
from . import structure
from .spec import Spec, TensorSpec


class Scope:
    """The module stack a node came from: ``((path, type_name), ...)``, outermost first."""

    __slots__ = ("stack",)

    def __init__(self, stack: Iterable[tuple[str, str]] = ()):
        self.stack = tuple((str(p), str(t)) for p, t in stack)

    @property
    def path(self) -> str:
        return self.stack[-1][0] if self.stack else ""

    @property
    def type(self) -> str:
        return self.stack[-1][1] if self.stack else ""

    def __bool__(self) -> bool:
        return bool(self.stack)

    def __eq__(self, other) -> bool:
        return isinstance(other, Scope) and other.stack == self.stack

    def __hash__(self) -> int:
        return hash(self.stack)

    def __repr__(self) -> str:
        return f"Scope({self.path!r}, {self.type!r})" if self else "Scope()"

    def __str__(self) -> str:
        return f"{self.path or '<root>'} ({self.type})" if self else "<root>"


_ROOT_SCOPE = Scope()  # immutable: one for every node made without a scope


class Deferred:
    """A constant tensor computed when it is first read, from tensors the graph holds anyway: a pass that makes a
    big tensor out of others (a batchnorm folded into a conv's weight) gives one, so the graph holds no second
    copy of the weights until something reads it. The ONNX writer computes each one as it writes it and lets it
    go (``compute``); reading ``Value.const`` computes it once and keeps it."""

    __slots__ = ("fn", "shape", "dtype")

    def __init__(self, fn: Callable[[], torch.Tensor], shape: Iterable[int], dtype: torch.dtype):
        self.fn, self.shape, self.dtype = fn, torch.Size(shape), dtype

    def compute(self) -> torch.Tensor:
        with torch.no_grad():
            t = self.fn()
        if t.shape != self.shape or t.dtype != self.dtype:
            raise GraphError(f"a deferred constant gave {t.dtype}{list(t.shape)}, not the {self.dtype}"
                             f"{list(self.shape)} it promised")
        return t

    def numel(self) -> int:
        return self.shape.numel()

    def element_size(self) -> int:
        return self.dtype.itemsize


class Value:
    __slots__ = ("name", "spec", "producer", "_uses", "_const", "names", "kind", "meta")

    def __init__(self, name: str, spec: Spec | None = None, *, producer: "Node | None" = None,
                 const: torch.Tensor | Deferred | None = None, kind: str = "node", names: Iterable[str] = ()):
        self.name = name
        self.spec = spec
        self.producer = producer
        self._uses: dict[Node, int] = {}
        self._const = const
        self.kind = kind  # "input" | "param" | "buffer" | "constant" | "node"
        self.names = list(names) or ([name] if kind in ("param", "buffer") else [])
        self.meta: dict[str, Any] = {}

    @property
    def const(self) -> torch.Tensor | None:
        """The tensor of a weight, buffer or constant (None for inputs and node outputs); a ``Deferred`` one is
        computed here, once."""
        c = self._const
        if isinstance(c, Deferred):
            c = self._const = c.compute()
        return c

    @const.setter
    def const(self, value: torch.Tensor | Deferred | None) -> None:
        self._const = value

    @property
    def is_const(self) -> bool:
        """A weight, buffer or constant (without computing a ``Deferred`` one)."""
        return self._const is not None

    @property
    def users(self) -> list["Node"]:
        return list(self._uses)

    @property
    def is_tensor(self) -> bool:
        return isinstance(self.spec, TensorSpec)

    def __repr__(self) -> str:
        return f"%{self.name}"


class Node:
    __slots__ = ("op", "args", "outputs", "out_struct", "scope", "source", "target", "meta", "graph", "_seen_args",
                 "_has_regions")

    def __init__(self, op: str, args: dict[str, Any], *, scope: Scope | None = None,
                 source: str | None = None, target: Any = None):
        self.op = op
        self.args = dict(args)
        self.outputs: list[Value] = []
        self.out_struct: tuple = ("tuple", [])
        self.scope = scope or _ROOT_SCOPE
        self.source = source
        self.target = target  # the callable of an opaque node, or the torch spelling it came from
        self.meta: dict[str, Any] = {}
        self.graph: Graph | None = None
        self._seen_args: dict | None = None  # the args dict ``_has_regions`` was found for
        self._has_regions = False

    @property
    def inputs(self) -> list[Value]:
        return list(iter_values(self.args))

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise GraphError(f"node %{self.name} has {len(self.outputs)} outputs, not one")
        return self.outputs[0]

    @property
    def name(self) -> str:
        return self.outputs[0].name if self.outputs else f"<{self.op}>"

    @property
    def regions(self) -> list[tuple[str, "Graph"]]:
        """``[(arg name, subgraph)]`` of a control-flow node, in argument order; empty for any other node."""
        args = self.args
        if self._seen_args is not args:  # looked at once per args dict (passes ask every node, several times)
            self._seen_args, self._has_regions = args, _holds_graph(args)
        return [(k, a) for k, a in args.items() if type(a) is Graph] if self._has_regions else []

    def describe(self) -> str:
        """``%conv_3 (layer1.0.conv1, Conv2d)``: how errors name a node."""
        where = f"{self.scope.path}, {self.scope.type}" if self.scope else "<root>"
        return f"%{self.name} ({where})"

    def __repr__(self) -> str:
        return f"Node({self.op}, %{self.name})"


ATOMS = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device})  # hold no Value or tensor


def _holds_graph(args: dict) -> bool:
    for a in args.values():
        if type(a) is Graph:
            return True
    return False


def iter_values(obj: Any) -> list[Value]:
    """The Values in ``obj`` (nested lists, tuples, dicts and slices), in order: a list (a recursive generator
    cost a third of an ONNX import's bookkeeping)."""
    out: list[Value] = []
    _collect_values(obj, out)
    return out


def _collect_values(obj: Any, out: list) -> None:
    t = type(obj)
    if t is Value:
        out.append(obj)
    elif t in ATOMS:
        return
    elif t is dict or t is list or t is tuple:  # a node's args, lists of operands: their atoms and Values inline
        for o in (obj.values() if t is dict else obj):
            to = type(o)
            if to is Value:
                out.append(o)
            elif to not in ATOMS:
                _collect_values(o, out)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _collect_values(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _collect_values(o, out)
    elif isinstance(obj, slice):
        _collect_values((obj.start, obj.stop, obj.step), out)
    elif isinstance(obj, Value):
        out.append(obj)


def map_values(obj: Any, fn: Callable[[Value], Any]) -> Any:
    t = type(obj)
    if t is Value:
        return fn(obj)
    if t in ATOMS:
        return obj
    if isinstance(obj, Value):
        return fn(obj)
    if isinstance(obj, list):
        return [map_values(o, fn) for o in obj]
    if isinstance(obj, tuple):
        mapped = [map_values(o, fn) for o in obj]
        return type(obj)(*mapped) if hasattr(obj, "_fields") else tuple(mapped)
    if isinstance(obj, dict):
        return {k: map_values(v, fn) for k, v in obj.items()}
    if isinstance(obj, slice):
        return slice(*(map_values(o, fn) for o in (obj.start, obj.stop, obj.step)))
    return obj


class Graph:
    """A computational graph. Build it with a frontend (``bridge.trace``) or by hand:

    >>> g = Graph()
    >>> x = g.add_input("x", TensorSpec((2, 3), torch.float32))
    >>> y = g.add_node("relu", {"input": x}).output
    >>> g.set_outputs([y])
    """

    def __init__(self):
        self.inputs: list[Value] = []
        self.constants: list[Value] = []
        self._nodes: list[Node] = []
        self._erased = 0  # erased nodes still in _nodes: removed in one sweep when ``nodes`` is next read
        self.outputs: list[Any] = []            # flat: Values or python constants
        self.output_struct: tuple = ("leaf", 0)  # how the flat outputs nest (structure spec)
        self.input_defaults: dict[str, Any] = {}  # non-tensor arguments baked in at trace time
        self.meta: dict[str, Any] = {}
        self._names: set[str] = set()
        self._suffix: dict[str, int] = {}  # unique_name's next suffix per base name
        self._module_cache = None

    @property
    def nodes(self) -> list[Node]:
        """Nodes in topological order. Erasing is O(1); the list is compacted when next read."""
        if self._erased:
            self._nodes = [n for n in self._nodes if n.graph is self]
            self._erased = 0
        return self._nodes

    @nodes.setter
    def nodes(self, value: list[Node]) -> None:
        self._nodes = list(value)
        self._erased = 0

    # ---- naming -------------------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        base = _sanitize(base)
        name = base
        if name in self._names:
            # the next suffix to try for this base: taking the n-th "relu" costs O(1), not O(n)
            i = self._suffix.get(base, 1)
            while f"{base}_{i}" in self._names:
                i += 1
            self._suffix[base] = i + 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    # ---- building -----------------------------------------------------------------------------
    def add_input(self, name: str, spec: Spec | None) -> Value:
        v = Value(self.unique_name(name), spec, kind="input")
        self.inputs.append(v)
        self._changed()
        return v

    def add_constant(self, name: str, tensor: torch.Tensor | Deferred, kind: str = "constant",
                     names: Iterable[str] = ()) -> Value:
        """A weight ("param"), buffer ("buffer") or any other fixed tensor ("constant"); ``Deferred``: computed
        when first read."""
        v = Value(self.unique_name(name), TensorSpec(tuple(tensor.shape), tensor.dtype),
                  const=tensor, kind=kind, names=list(names) or [name])
        self.constants.append(v)
        self._changed()
        return v

    def add_node(self, op: str, args: dict[str, Any], *, outputs: Iterable[tuple[str, Spec | None]] = (),
                 out_struct: tuple | None = None, scope: Scope | None = None, source: str | None = None,
                 target: Any = None, name: str | None = None, before: Node | None = None,
                 after: Node | None = None) -> Node:
        """Add a node; with no ``outputs`` given it gets one output named ``name`` (or the op)."""
        node = Node(op, args, scope=scope, source=source, target=target)
        node.graph = self
        outs = list(outputs) or [(name or op, None)]
        for oname, spec in outs:
            node.outputs.append(Value(self.unique_name(oname), spec, producer=node))
        node.out_struct = out_struct if out_struct is not None else (
            ("leaf", 0) if len(node.outputs) == 1 else ("tuple", [("leaf", i) for i in range(len(outs))]))
        for v in iter_values(node.args):
            v._uses[node] = v._uses.get(node, 0) + 1
        if before is not None:
            self.nodes.insert(self.nodes.index(before), node)
        elif after is not None:
            self.nodes.insert(self.nodes.index(after) + 1, node)
        else:
            self._nodes.append(node)  # erased nodes still in the list are dropped on the next read
        self._changed()
        return node

    def set_outputs(self, outputs: list[Any], struct: tuple | None = None) -> None:
        for v in iter_values(self.outputs):
            v.meta.pop("is_output", None)
        self.outputs = list(outputs)
        self.output_struct = struct if struct is not None else (
            ("leaf", 0) if len(outputs) == 1 else ("tuple", [("leaf", i) for i in range(len(outputs))]))
        for v in iter_values(self.outputs):
            v.meta["is_output"] = True
        self._changed()

    def rename(self, v: Value, name: str) -> str:
        """Give ``v`` the name ``name`` (made unique); returns the name it got."""
        self._names.discard(v.name)
        v.name = self.unique_name(name)
        self._changed()
        return v.name

    # ---- mutation -----------------------------------------------------------------------------
    def set_args(self, node: Node, args: dict[str, Any]) -> None:
        for v in iter_values(node.args):
            _drop_use(v, node)
        node.args = dict(args)
        for v in iter_values(node.args):
            v._uses[node] = v._uses.get(node, 0) + 1
        self._changed()

    def replace_all_uses(self, old: Value, new: Any) -> int:
        """Make every user of ``old`` (and the graph outputs) use ``new``; returns how many nodes changed."""
        users = old.users
        for node in users:
            self.set_args(node, map_values(node.args, lambda v: new if v is old else v))
        if any(v is old for v in iter_values(self.outputs)):
            self.set_outputs(map_values(self.outputs, lambda v: new if v is old else v), self.output_struct)
        return len(users)

    def erase_node(self, node: Node) -> None:
        for v in node.outputs:
            if v._uses or v.meta.get("is_output"):
                users = ", ".join(f"%{u.name}" for u in v.users) or "the graph outputs"
                raise GraphError(f"cannot erase {node.describe()}: %{v.name} is still used by {users}")
        for v in iter_values(node.args):
            _drop_use(v, node)
        node.graph = None
        self._erased += 1
        for v in node.outputs:
            self._names.discard(v.name)
        self._changed()

    def remove_unused_constants(self, kinds: Iterable[str] | None = None) -> int:
        """Drop the constants nothing reads (only those of ``kinds``, e.g. ``["constant"]``, when given: a pass
        that made a value of the computation unused keeps the model's weights and buffers)."""
        kinds = None if kinds is None else set(kinds)
        keep = [c for c in self.constants if c._uses or c.meta.get("is_output") or
                (kinds is not None and c.kind not in kinds)]
        removed = len(self.constants) - len(keep)
        kept = set(map(id, keep))
        for c in self.constants:
            if id(c) not in kept:
                self._names.discard(c.name)
        self.constants = keep
        if removed:
            self._changed()
        return removed

    def _changed(self) -> None:
        self._module_cache = None

    def copy(self) -> "Graph":
        """A structural copy (new Nodes and Values; constant tensors and python objects shared)."""
        new = Graph()
        vmap: dict[int, Value] = {}

        def clone(v: Value, producer=None) -> Value:
            nv = Value(v.name, v.spec, producer=producer, const=v._const, kind=v.kind, names=list(v.names))
            nv.meta = {k: val for k, val in v.meta.items() if k != "is_output"}
            vmap[id(v)] = nv
            return nv

        new.inputs = [clone(v) for v in self.inputs]
        new.constants = [clone(v) for v in self.constants]
        for n in self.nodes:
            args = map_values(n.args, lambda v: vmap[id(v)])
            nn_ = Node(n.op, {k: a.copy() if isinstance(a, Graph) else a for k, a in args.items()},
                       scope=n.scope, source=n.source, target=n.target)
            nn_.graph = new
            nn_.meta = dict(n.meta)
            nn_.out_struct = n.out_struct
            nn_.outputs = [clone(v, nn_) for v in n.outputs]
            for v in iter_values(nn_.args):
                v._uses[nn_] = v._uses.get(nn_, 0) + 1
            new.nodes.append(nn_)
        new.set_outputs(map_values(self.outputs, lambda v: vmap[id(v)]), self.output_struct)
        new.input_defaults = dict(self.input_defaults)
        new.meta = dict(self.meta)
        new._names = set(self._names)
        return new

    # ---- queries ------------------------------------------------------------------------------
    def values(self) -> Iterator[Value]:
        yield from self.inputs
        yield from self.constants
        for n in self.nodes:
            yield from n.outputs

    def walk(self) -> Iterator[tuple[Node, tuple[Node, ...]]]:
        """Every node, those inside regions too, depth first in execution order, each with the region nodes that
        enclose it (outermost first; empty at the top level)."""
        stack: list[tuple[Iterator[Node], tuple[Node, ...]]] = [(iter(self.nodes), ())]
        while stack:
            it, outer = stack[-1]
            node = next(it, None)
            if node is None:
                stack.pop()
                continue
            yield node, outer
            for _, region in reversed(node.regions):
                stack.append((iter(region.nodes), outer + (node,)))

    def value(self, name: str) -> Value:
        for v in self.values():
            if v.name == name:
                return v
        raise KeyError(name)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if any(v.name == name for v in n.outputs):
                return n
        raise KeyError(name)

    @property
    def params(self) -> list[Value]:
        return [c for c in self.constants if c.kind == "param"]

    @property
    def buffers(self) -> list[Value]:
        return [c for c in self.constants if c.kind == "buffer"]

    def find(self, op: str) -> list[Node]:
        """The top-level nodes of op ``op`` (``walk`` reaches those inside regions)."""
        return [n for n in self.nodes if n.op == op]

    def opaque_nodes(self) -> list[Node]:
        """Every opaque node, those inside regions too."""
        return [n for n, _ in self.walk() if n.op == "opaque"]

    # ---- invariants ---------------------------------------------------------------------------
    def check(self) -> "Graph":
        """Verify the invariants; raise ``GraphError`` naming the first broken one."""
        defined: set[int] = set()
        names: set[str] = set()
        for v in list(self.inputs) + list(self.constants):
            if v.name in names:
                raise GraphError(f"value name %{v.name} is used twice")
            names.add(v.name)
            defined.add(id(v))
            if v.producer is not None:
                raise GraphError(f"%{v.name} is an input/constant but has a producer")
        counted: dict[int, dict[Node, int]] = {}
        for node in self.nodes:
            if node.graph is not self:
                raise GraphError(f"{node.describe()} does not belong to this graph")
            for v in iter_values(node.args):
                if id(v) not in defined:
                    raise GraphError(f"{node.describe()} uses %{v.name} before it is defined "
                                     "(nodes are not in topological order, or the value is foreign)")
                counted.setdefault(id(v), {})
                counted[id(v)][node] = counted[id(v)].get(node, 0) + 1
            for key, region in node.regions:
                try:
                    region.check()
                except GraphError as e:
                    raise GraphError(f"in region {key} of {node.describe()}: {e}") from e
            for v in node.outputs:
                if v.producer is not node:
                    raise GraphError(f"%{v.name} is an output of {node.describe()} but names another producer")
                if v.name in names:
                    raise GraphError(f"value name %{v.name} is used twice")
                names.add(v.name)
                defined.add(id(v))
        for v in iter_values(self.outputs):
            if id(v) not in defined:
                raise GraphError(f"graph output %{v.name} is not defined in the graph")
        for v in self.values():
            if v._uses != counted.get(id(v), {}):
                raise GraphError(f"use-list of %{v.name} is stale: has {sorted(n.name for n in v._uses)}, "
                                 f"actual {sorted(n.name for n in counted.get(id(v), {}))}")
        return self

    # ---- execution and views ------------------------------------------------------------------
    def to_module(self) -> torch.nn.Module:
        """A fresh ``nn.Module`` generated from this graph (parameters keep their names)."""
        from ..backends.torch import to_module

        return to_module(self)

    def run(self, *args, **kwargs):
        """Execute the graph (through its generated module) and return the model's output structure. Inputs
        that do not fit what it was traced with (count, keywords, rank, static dims, dtype) raise ``InputError``;
        a numpy array is taken as a tensor."""
        if self._module_cache is None:
            self._module_cache = self.to_module()
        try:
            return self._module_cache(*args, **kwargs)
        except TypeError as e:  # too many or too few inputs, an unknown keyword: say which, as InputError
            from ..backends.torch import call_error

            err = call_error(self._module_cache, args, kwargs)
            if err is None:
                raise
            raise err from e

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        return f"<bridge.Graph: {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.params)} params>"

    def output_description(self) -> str:
        names = [f"%{o.name}" if isinstance(o, Value) else repr(o) for o in self.outputs]
        return structure.describe(self.output_struct, names)


def _drop_use(v: Value, node: Node) -> None:
    n = v._uses.get(node, 0)
    if n <= 1:
        v._uses.pop(node, None)
    else:
        v._uses[node] = n - 1


_UNSAFE = re.compile(r"[^0-9A-Za-z_.]")


def _sanitize(name: str) -> str:
    return _UNSAFE.sub("_", name) or "v"
