"""Shape and indexing: views, reshapes, permutations, concatenation and splitting, indexing."""
from __future__ import annotations

import operator

import torch
import torch.nn as nn

from ._util import varargs_method, zero
from .registry import register


def _mod(fn):
    return lambda m, args, kwargs: (args, {**kwargs, **fn(m)})


@register("flatten", family="shape", functions=[torch.flatten], methods=["flatten"], aten=["flatten.using_ints"],
          modules={nn.Flatten: _mod(lambda m: dict(start_dim=m.start_dim, end_dim=m.end_dim))}, flops=zero)
def flatten(input, start_dim=0, end_dim=-1):
    return torch.flatten(input, start_dim, end_dim)


@register("unflatten", family="shape", functions=[torch.unflatten], methods=["unflatten"], aten=["unflatten.int"],
          modules={nn.Unflatten: _mod(lambda m: dict(dim=m.dim, sizes=tuple(m.unflattened_size)))}, flops=zero)
def unflatten(input, dim, sizes):
    return torch.unflatten(input, dim, sizes)


@register("view", family="shape", methods=[("view", varargs_method("shape"))], flops=zero)
def view(input, shape):
    """input.view(shape); a dtype instead of a shape reinterprets the bytes."""
    return input.view(shape)


# aten.view in a torch.export graph is valid for the strides seen at export time, on that device: SDPA and other
# kernels lay their outputs out differently on CUDA, so a CPU-exported view can fail there. reshape is the same
# view wherever a view is possible, and copies only where the view would raise.
@register("reshape", family="shape", functions=[torch.reshape], methods=[("reshape", varargs_method("shape"))],
          aten=["reshape.default", "view.default", "_unsafe_view.default"], flops=zero)
def reshape(input, shape):
    return torch.reshape(input, shape)


@register("view_as", family="shape", methods=["view_as", "reshape_as"], flops=zero, n_tensor_params=2)
def view_as(input, other):
    return input.reshape(other.shape)


@register("permute", family="shape", functions=[torch.permute], methods=[("permute", varargs_method("dims"))],
          aten=["permute.default"], flops=zero)
def permute(input, dims):
    return torch.permute(input, dims)


@register("transpose", family="shape", functions=[torch.transpose, torch.swapaxes, torch.swapdims],
          methods=["transpose", "swapaxes", "swapdims", "transpose_"], aten=["transpose.int"], flops=zero)
def transpose(input, dim0, dim1):
    return torch.transpose(input, dim0, dim1)


@register("t", family="shape", functions=[torch.t], methods=["t"], aten=["t.default"], flops=zero)
def t(input):
    """Transpose of a tensor of rank <= 2."""
    return torch.t(input)


@register("movedim", family="shape", functions=[torch.movedim, torch.moveaxis], methods=["movedim", "moveaxis"],
          aten=["movedim.int"], flops=zero)
def movedim(input, source, destination):
    return torch.movedim(input, source, destination)


@register("squeeze", family="shape", functions=[torch.squeeze], methods=["squeeze", "squeeze_"],
          aten=["squeeze.default", "squeeze.dim", "squeeze.dims"], flops=zero)
def squeeze(input, dim=None):
    return torch.squeeze(input) if dim is None else torch.squeeze(input, dim)


@register("unsqueeze", family="shape", functions=[torch.unsqueeze], methods=["unsqueeze", "unsqueeze_"],
          aten=["unsqueeze.default"], flops=zero)
def unsqueeze(input, dim):
    return torch.unsqueeze(input, dim)


def _expand_aten(args, kwargs):
    return args[:2], {}


@register("expand", family="shape", methods=[("expand", varargs_method("size"))],
          aten=[("expand.default", _expand_aten)], flops=zero)
def expand(input, size):
    return input.expand(size)


@register("expand_as", family="shape", methods=["expand_as"], flops=zero, n_tensor_params=2)
def expand_as(input, other):
    return input.expand_as(other)


@register("repeat", family="shape", methods=[("repeat", varargs_method("repeats"))], aten=["repeat.default"],
          flops=zero)
def repeat(input, repeats):
    return input.repeat(repeats)


@register("tile", family="shape", functions=[torch.tile], methods=[("tile", varargs_method("dims"))], flops=zero)
def tile(input, dims):
    return torch.tile(input, dims)


@register("repeat_interleave", family="shape", functions=[torch.repeat_interleave], methods=["repeat_interleave"],
          aten=["repeat_interleave.self_int", "repeat_interleave.self_Tensor"], flops=zero)
def repeat_interleave(input, repeats, dim=None, output_size=None):
    return torch.repeat_interleave(input, repeats, dim, output_size=output_size)


@register("cat", family="shape", functions=[torch.cat, torch.concat, torch.concatenate], aten=["cat.default"],
          flops=zero)
def cat(tensors, dim=0):
    """Concatenate along ``dim``."""
    return torch.cat(tensors, dim)


@register("stack", family="shape", functions=[torch.stack], aten=["stack.default"], flops=zero)
def stack(tensors, dim=0):
    return torch.stack(tensors, dim)


@register("hstack", family="shape", functions=[torch.hstack], flops=zero)
def hstack(tensors):
    return torch.hstack(tensors)


@register("vstack", family="shape", functions=[torch.vstack], flops=zero)
def vstack(tensors):
    return torch.vstack(tensors)


@register("split", family="shape", functions=[torch.split], methods=["split"],
          aten=["split.Tensor", "split_with_sizes.default"], flops=zero)
def split(input, split_size_or_sections, dim=0):
    """Split into pieces of a size, or of the listed sizes; a tuple of tensors."""
    return tuple(torch.split(input, split_size_or_sections, dim))


@register("chunk", family="shape", functions=[torch.chunk], methods=["chunk"], aten=["chunk.default"], flops=zero)
def chunk(input, chunks, dim=0):
    return tuple(torch.chunk(input, chunks, dim))


@register("tensor_split", family="shape", functions=[torch.tensor_split], methods=["tensor_split"], flops=zero)
def tensor_split(input, indices_or_sections, dim=0):
    return tuple(torch.tensor_split(input, indices_or_sections, dim))


@register("unbind", family="shape", functions=[torch.unbind], methods=["unbind"], aten=["unbind.int"], flops=zero)
def unbind(input, dim=0):
    return tuple(torch.unbind(input, dim))


def _aten_index(args, kwargs):
    """aten.index.Tensor(self, indices): a ``None`` index means the whole dim (``:``), not a new axis."""
    b = dict(zip(("input", "indices"), args), **kwargs)
    return (b["input"], tuple(slice(None) if i is None else i for i in b["indices"])), {}


@register("getitem", family="shape", functions=[operator.getitem], methods=["__getitem__"],
          aten=[("index.Tensor", _aten_index)], flops=zero)
def getitem(input, index):
    """input[index]: ints, slices, None, Ellipsis, bool masks and index tensors."""
    return input[index]


@register("setitem", family="shape", functions=[operator.setitem], methods=["__setitem__"],
          aten=[("index_put.default", lambda a, k: ((a[0], tuple(a[1]), a[2]), {}))], flops=zero,
          n_tensor_params=3)
def setitem(input, index, value):
    """A copy of ``input`` with ``input[index] = value`` (the functional form of an in-place write)."""
    out = input.clone()
    out[index] = value
    return out


@register("select", family="shape", functions=[torch.select], methods=["select"], aten=["select.int"], flops=zero)
def select(input, dim, index):
    return torch.select(input, dim, index)


@register("slice", family="shape", aten=["slice.Tensor"], flops=zero)
def slice_(input, dim=0, start=None, end=None, step=1):
    """input[..., start:end:step, ...] along ``dim``."""
    idx = [slice(None)] * (dim % input.dim()) + [slice(start, end, step)]
    return input[tuple(idx)]


@register("narrow", family="shape", functions=[torch.narrow], methods=["narrow"], aten=["narrow.default"],
          flops=zero)
def narrow(input, dim, start, length):
    return torch.narrow(input, dim, start, length)


@register("index_select", family="shape", functions=[torch.index_select], methods=["index_select"],
          aten=["index_select.default"], flops=zero, n_tensor_params=3)
def index_select(input, dim, index):
    return torch.index_select(input, dim, index)


@register("gather", family="shape", functions=[torch.gather], methods=["gather"], aten=["gather.default"],
          flops=zero)
def gather(input, dim, index):
    return torch.gather(input, dim, index)


@register("scatter", family="shape", functions=[torch.scatter], methods=["scatter", "scatter_"],
          aten=["scatter.src", "scatter.value"], flops=zero)
def scatter(input, dim, index, src):
    return torch.scatter(input, dim, index, src)


@register("scatter_add", family="shape", functions=[torch.scatter_add], methods=["scatter_add", "scatter_add_"],
          aten=["scatter_add.default"], flops=zero)
def scatter_add(input, dim, index, src):
    return torch.scatter_add(input, dim, index, src)


@register("masked_select", family="shape", functions=[torch.masked_select], methods=["masked_select"],
          aten=["masked_select.default"], flops=zero, n_tensor_params=2)
def masked_select(input, mask):
    return torch.masked_select(input, mask)


@register("nonzero", family="shape", functions=[torch.nonzero], methods=["nonzero"], aten=["nonzero.default"],
          flops=zero)
def nonzero(input):
    return torch.nonzero(input)


@register("flip", family="shape", functions=[torch.flip], methods=[("flip", varargs_method("dims"))],
          aten=["flip.default"], flops=zero)
def flip(input, dims):
    return torch.flip(input, dims)


@register("roll", family="shape", functions=[torch.roll], methods=["roll"], aten=["roll.default"], flops=zero)
def roll(input, shifts, dims=None):
    return torch.roll(input, shifts, dims)


@register("tril", family="shape", functions=[torch.tril], methods=["tril", "tril_"], aten=["tril.default"],
          flops=zero)
def tril(input, diagonal=0):
    return torch.tril(input, diagonal)


@register("triu", family="shape", functions=[torch.triu], methods=["triu", "triu_"], aten=["triu.default"],
          flops=zero)
def triu(input, diagonal=0):
    return torch.triu(input, diagonal)


@register("contiguous", family="shape", methods=["contiguous"], aten=["contiguous.default"], flops=zero)
def contiguous(input):
    return input.contiguous()


@register("clone", family="shape", functions=[torch.clone], methods=["clone"], aten=["clone.default"], flops=zero)
def clone(input):
    return input.clone()


@register("detach", family="shape", functions=[torch.detach], methods=["detach", "detach_"],
          aten=["detach.default", "alias.default", "lift_fresh_copy.default"], flops=zero)
def detach(input):
    return input.detach()


@register("diagonal", family="shape", functions=[torch.diagonal], methods=["diagonal"], aten=["diagonal.default"],
          flops=zero)
def diagonal(input, offset=0, dim1=0, dim2=1):
    return torch.diagonal(input, offset, dim1, dim2)


@register("broadcast_to", family="shape", functions=[torch.broadcast_to], methods=["broadcast_to"], flops=zero)
def broadcast_to(input, size):
    return torch.broadcast_to(input, size)
