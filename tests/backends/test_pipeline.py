"""bridge.to_pipeline: cost-balanced stages that train on torch.distributed.pipelining.

The oracle is eager PyTorch in one process: the composed stages compute the model's outputs; over a local gloo
group, the pipeline's loss and every parameter's gradient equal one eager forward/backward on the full batch
(1e-5), for GPipe, 1F1B and an interleaved schedule; a few SGD steps track eager's losses and parameters; batch
norm's running statistics update as eager's do microbatch by microbatch. The balance is checked against a brute
force over every contiguous split.
"""
from __future__ import annotations

import itertools
import os
import socket

import pytest
import torch
import torch.nn as nn

import bridge
from bridge.errors import TransformError
from bridge.views.sequential import node_weights
from tests import pipeline_models as pm
from tests.helpers import assert_same_outputs


def _compose(pipe, *args):
    out = pipe.stage_module(0)(*args)
    for i in range(1, len(pipe)):
        out = pipe.stage_module(i)(*out)
    return out


@pytest.mark.parametrize("name", ["dag", "dag_bn", "transformer"])
@pytest.mark.parametrize("stages", [2, 3, 4])
def test_stages_compose_to_the_model_and_own_their_state(name, stages):
    model, x, _ = pm.build(name)
    model.eval()
    untouched = {n: t.clone() for n, t in model.state_dict().items()}
    pipe = bridge.to_pipeline(model, (x[:4],), stages=stages)  # traced in training mode
    assert not model.training and all(torch.equal(untouched[n], t) for n, t in model.state_dict().items())
    assert len(pipe) == stages and all(s.nodes > 0 for s in pipe.info)
    fresh = x[4:]
    model.train()
    with torch.no_grad():
        ref = model(fresh)
    for i in range(stages):
        pipe.stage_module(i).train()
    with torch.no_grad():
        assert_same_outputs(_compose(pipe, fresh), ref)
    # each parameter once, under the model's own name, a copy of the model's value
    own = dict(model.state_dict())
    names = [n for i in range(stages) for n in pipe.stage_module(i).state_dict()]
    assert len(names) == len(set(names)) and set(names) <= set(own)
    assert {n for n, _ in model.named_parameters()} <= set(names)
    before = {n: t.clone() for n, t in own.items()}
    for i in range(stages):
        for p in pipe.stage_module(i).parameters():
            p.data.add_(1.0)
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())  # the model never changes


def _best_contiguous(weights: list[int], k: int) -> int:
    n = len(weights)
    best = None
    for cuts in itertools.combinations(range(1, n), k - 1):
        bounds = [0, *cuts, n]
        worst = max(sum(weights[a:b]) for a, b in zip(bounds, bounds[1:]))
        best = worst if best is None else min(best, worst)
    return best


@pytest.mark.parametrize("balance", ["flops", "params", "memory"])
@pytest.mark.parametrize("stages", [2, 3, 4])
def test_the_largest_stage_is_within_1_2x_of_the_best_contiguous_split(balance, stages):
    model, x, _ = pm.build("dag")
    pipe = bridge.to_pipeline(model, (x[:4],), stages=stages, balance=balance)
    weights = node_weights(pipe.graph, balance)
    best = _best_contiguous(weights, stages)  # brute force: every contiguous split
    assert pipe.ideal == best
    assert max(s.cost for s in pipe.info) <= 1.2 * best
    assert sum(s.cost for s in pipe.info) == sum(weights)


def test_balance_by_measured_time():
    model, x, _ = pm.build("transformer")
    pipe = bridge.to_pipeline(model, (x[:4],), stages=3, balance="time")
    assert pipe.balance == "time" and all(s.cost > 0 for s in pipe.info)
    assert max(s.cost for s in pipe.info) <= 1.2 * pipe.ideal
    assert "balanced by time" in pipe.describe()


def test_memory_limit_is_kept_or_refused():
    from bridge.views.pipeline import stage_memory_sizes

    model, x, _ = pm.build("transformer")
    free = bridge.to_pipeline(model, (x[:4],), stages=2, memory_limit="1GiB", in_flight=2)
    assert all(m <= 2**30 for m in free.memory)
    sizes = stage_memory_sizes(free.graph, 4.0, 2)
    assert sum(free.memory) == sum(sizes)
    # the smallest limit 3 stages can keep (brute force), which 2 stages cannot: refused for 2, kept by 3
    tight = _best_contiguous(sizes, 3)
    assert _best_contiguous(sizes, 2) > tight
    with pytest.raises(TransformError, match="at least 3 stages"):
        bridge.to_pipeline(model, (x[:4],), stages=2, memory_limit=tight, in_flight=2)
    three = bridge.to_pipeline(model, (x[:4],), stages=3, memory_limit=tight, in_flight=2)
    assert max(three.memory) <= tight
    assert max(s.cost for s in three.info) >= three.ideal  # the flops balance under the limit
    with pytest.raises(TransformError, match="alone need"):
        bridge.to_pipeline(model, (x[:4],), stages=3, memory_limit=16)
    with pytest.raises(TransformError, match="memory_limit"):
        bridge.to_pipeline(model, (x[:4],), stages=3, memory_limit="lots")


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.body = nn.Sequential(*(nn.Linear(8, 8) for _ in range(4)))
        self.out = nn.Linear(8, 20, bias=False)
        self.out.weight = self.embed.weight  # tied: read by the first and the last stage

    def forward(self, ids):
        return self.out(torch.tanh(self.body(self.embed(ids))))


def test_parameters_shared_across_stages_are_refused_by_name():
    with pytest.raises(TransformError, match=r"embed\.weight = out\.weight \(stages 0, 1\)"):
        bridge.to_pipeline(_Tied(), (torch.randint(0, 20, (2, 5)),), stages=2)


def test_describe_and_draw_show_the_stages(tmp_path):
    model, x, _ = pm.build("dag")
    pipe = bridge.to_pipeline(model, (x[:4],), stages=3)
    text = pipe.describe()
    assert text.count("\nstage ") == 3 and "in (x)" in text
    for s in pipe.info[1:]:
        assert s.inputs  # the tensors crossing each cut are named
    dot = open(pipe.draw(tmp_path / "p.dot", depth=1)).read()
    assert all(f"stage{i}" in dot for i in range(3))


def test_bad_arguments_are_refused():
    model, x, _ = pm.build("dag")
    for kw in (dict(stages=0), dict(stages=2, balance="speed"), dict(stages=10**6)):
        with pytest.raises(TransformError):
            bridge.to_pipeline(model, (x[:4],), **kw)


# ---- training over a local gloo group --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(tmp_path, name, schedule, stages, world, microbatches=4, steps=3, balance="flops"):
    import torch.multiprocessing as mp

    mp.start_processes(pm.run_rank, args=(world, _free_port(), name, schedule, stages, microbatches, steps,
                                          str(tmp_path), balance), nprocs=world, join=True, start_method="spawn")
    ranks = [torch.load(os.path.join(tmp_path, f"rank{r}.pt")) for r in range(world)]
    got = {"losses": next(r["losses"] for r in ranks if r["losses"]), "grads": {}, "state": {}}
    for r in ranks:
        got["grads"].update(r["grads"])
        got["state"].update(r["state"])
    return got, pm.eager_reference(name, microbatches, steps), pm.eager_reference(name, microbatches, steps, True)


def _check(got, ref, steps):
    """The first step's loss and gradients against one eager forward/backward on the full batch (1e-5 of the
    gradients' scale: a conv bias before batch norm has a gradient of 0 in exact arithmetic, some 1e-9 of rounding
    either way); the steps after it and the trained state against eager SGD steps that accumulate microbatch
    gradients as the schedules do (the same arithmetic: rounding differences of the first kind grow with each step,
    1e-4 of the loss in two steps of torchvision's ResNet-18, whose last blocks normalize microbatches of two)."""
    assert set(got["grads"]) == set(ref["grads"])  # every parameter got a gradient, under its name
    scale = max(float(g.abs().max()) for g in ref["grads"].values())
    for n, g in ref["grads"].items():
        assert_same_outputs(got["grads"][n], g, atol=1e-5, rtol=1e-5, scale_floor=scale, path=n)
    assert got["losses"][0] == pytest.approx(ref["losses"][0], rel=1e-5, abs=1e-6)
    assert got["losses"] == pytest.approx(steps["losses"], rel=1e-5, abs=1e-6)
    # parameters after the steps, and running statistics; batch norm's num_batches_tracked is a counter its python
    # forward bumps, which the graph has no use for (momentum=None keeps the layer whole, an opaque call)
    assert {n for n in steps["state"] if n not in got["state"]} <= {n for n in steps["state"]
                                                                      if n.endswith("num_batches_tracked")}
    for n, t in got["state"].items():
        assert_same_outputs(t, steps["state"][n], atol=1e-5, rtol=1e-5, path=n)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_dag_trains_on_two_ranks_like_eager(tmp_path, schedule):
    _check(*_train(tmp_path, "dag", schedule, stages=2, world=2))


@pytest.mark.slow
@pytest.mark.parametrize("name, schedule, stages, world", [
    ("transformer", "gpipe", 2, 2), ("transformer", "1f1b", 3, 3), ("dag", "1f1b", 4, 4),
    ("dag_bn", "gpipe", 2, 2), ("transformer", "interleaved", 4, 2), ("gpt2", "1f1b", 3, 3),
    ("resnet18", "gpipe", 2, 2),
])
def test_models_train_over_gloo_like_eager(tmp_path, name, schedule, stages, world):
    pytest.importorskip({"gpt2": "transformers", "resnet18": "torchvision"}.get(name, "torch"))
    _check(*_train(tmp_path, name, schedule, stages=stages, world=world))


def test_the_guide_shows_the_example_verbatim():
    """docs/pipeline.md shows the function each rank runs in examples/pipeline_training.py (a ```py block: it
    needs processes, which the example's own test launches); it must stay the example's code."""
    import re

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    page = open(os.path.join(root, "docs", "pipeline.md")).read()
    blocks = re.findall(r"^```py\n(.*?)^```", page, re.S | re.M)
    assert len(blocks) == 1 and "def rank_main(" in blocks[0]
    assert blocks[0] in open(os.path.join(root, "examples", "pipeline_training.py")).read()
