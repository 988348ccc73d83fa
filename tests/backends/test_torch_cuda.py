"""Zoo parity on CUDA: a graph traced on CPU, its generated module moved with ``.to("cuda")``, against the eager
model moved the same way; and graphs traced from CUDA inputs directly. Skipped where no CUDA device is present.

Run on a GPU machine with ``benchmarks/gpu_check.sh`` (this file, the CPU parity suite and the executor benchmark).
"""
from __future__ import annotations

import pytest
import torch

import bridge
from bridge import zoo
from tests.helpers import assert_same_outputs, same_data_ptr_groups, to_device

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

# Known bridge bugs that show on CUDA (strict: a fix turns them into failures to be removed here).
XFAIL: dict[tuple[str, str], str] = {}


def _params(check: str, entries):
    out = []
    for e in entries:
        marks = [pytest.mark.slow] if "slow" in e.tags else []
        if (e.name, check) in XFAIL:
            marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[(e.name, check)]))
        out.append(pytest.param(e, marks=marks, id=e.name))
    return out




def _eager(model, args, kwargs):
    with torch.no_grad():
        return model(*args, **kwargs)


@pytest.mark.parametrize("entry", _params("moved", zoo.entries()))
def test_traced_on_cpu_runs_on_cuda(entry):
    model = entry.make_model()
    args, kwargs = entry.make_inputs(entry.batch)
    g = bridge.trace(model, args, kwargs)
    gm = g.to_module().to("cuda")
    model = model.to("cuda")
    args, kwargs = to_device(args, "cuda"), to_device(kwargs, "cuda")
    with torch.no_grad():
        got = gm(*args, **kwargs)
    assert_same_outputs(got, _eager(model, args, kwargs))
    assert same_data_ptr_groups(gm) == same_data_ptr_groups(model)


@pytest.mark.parametrize("entry", _params("traced", [zoo.get(n) for n in (
    "resnet_mini", "mobilenetv2_mini", "unet_mini", "causal_attention", "transformer_encoder", "lstm_tagger",
    "bigru", "mha", "indexing_heavy", "inplace_ops", "dict_output", "tied_weights")]))
def test_traced_from_cuda_inputs(entry):
    model = entry.make_model().to("cuda")
    args, kwargs = (to_device(x, "cuda") for x in entry.make_inputs(entry.batch))
    g = bridge.trace(model, args, kwargs)
    g.check()
    ref = _eager(model, args, kwargs)
    with torch.no_grad():
        assert_same_outputs(g.run(*args, **kwargs), ref)
        # and back: the same graph's module follows its inputs to the CPU
        cpu_args, cpu_kwargs = to_device(args, "cpu"), to_device(kwargs, "cpu")
        assert_same_outputs(g.to_module().to("cpu")(*cpu_args, **cpu_kwargs),
                            _eager(model.to("cpu"), cpu_args, cpu_kwargs))


@pytest.mark.parametrize("entry", _params("dynamic", [e for e in zoo.entries() if e.dynamic]))
def test_dynamic_batch_on_cuda(entry):
    model = entry.make_model()
    g = bridge.trace(model, *entry.make_inputs(entry.batch), dynamic=entry.dynamic)
    gm = g.to_module().to("cuda")
    model = model.to("cuda")
    for batch in (1, entry.batch + 3):
        args, kwargs = (to_device(x, "cuda") for x in entry.make_inputs(batch))
        with torch.no_grad():
            assert_same_outputs(gm(*args, **kwargs), _eager(model, args, kwargs))


def test_half_precision_on_cuda():
    e = zoo.get("resnet_mini")
    model = e.make_model()
    args, kwargs = e.make_inputs(4)
    gm = bridge.trace(model, args, kwargs).to_module().to("cuda").half()
    model = model.to("cuda").half()
    args = to_device(args, "cuda")
    args = tuple(a.half() for a in args)
    with torch.no_grad():
        got, ref = gm(*args), model(*args)
    assert got.dtype == torch.float16
    assert_same_outputs(got, ref, rtol=1e-3, atol=1e-3)
