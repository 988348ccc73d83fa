"""Models and the per-rank worker of the pipeline tests (a module of its own: spawned processes import it).

``run_rank`` is what each rank of a local gloo group runs: it builds the same model from the same seed, cuts it
with ``bridge.to_pipeline``, builds its stage(s), trains ``steps`` steps with a torch schedule and writes what the
parent checks (losses, the gradients of the first step, the parameters and buffers after the last) to a file.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResidualConcatNet(nn.Module):
    """A DAG: residual blocks, a concat merge, and a skip from the stem to the head that crosses every cut."""

    def __init__(self, c: int = 8, classes: int = 5, norm: str = "group"):
        super().__init__()
        norm_layer = (lambda n: nn.GroupNorm(2, n)) if norm == "group" else nn.BatchNorm2d
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.block1 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), norm_layer(c), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), norm_layer(c), nn.ReLU())
        self.left = nn.Conv2d(c, c, 1)
        self.right = nn.Conv2d(c, c, 3, padding=1)
        self.merge = nn.Conv2d(2 * c, c, 1)
        self.head = nn.Linear(2 * c, classes)

    def forward(self, x):
        s = F.relu(self.stem(x))
        h = s + self.block1(s)                       # residual
        h = h + self.block2(h)                       # residual
        h = self.merge(torch.cat([self.left(h), self.right(h)], 1))  # branches merged by a concat
        pooled = torch.cat([h.mean((2, 3)), s.mean((2, 3))], 1)     # the stem's output skips to the head
        return self.head(pooled)


class TinyTransformer(nn.Module):
    """Embedding, pre-norm attention blocks, a classifier on the mean token."""

    def __init__(self, vocab: int = 50, d: int = 16, heads: int = 2, layers: int = 3, classes: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, 12, d) * 0.1)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True,
                                                               norm_first=True) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        h = self.embed(ids) + self.pos[:, :ids.shape[1]]
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h).mean(1))


def build(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model (seeded), a full batch of inputs and its targets (class indices)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if name == "dag":
        return ResidualConcatNet(), torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g)
    if name == "dag_bn":
        return ResidualConcatNet(norm="batch"), torch.randn(8, 3, 8, 8, generator=g), \
            torch.randint(0, 5, (8,), generator=g)
    if name == "transformer":
        return TinyTransformer(), torch.randint(0, 50, (8, 12), generator=g), torch.randint(0, 5, (8,), generator=g)
    if name == "resnet18":  # torchvision's, batch norm included
        import torchvision

        return torchvision.models.resnet18(num_classes=5), torch.randn(8, 3, 64, 64, generator=g), \
            torch.randint(0, 5, (8,), generator=g)
    if name == "gpt2":  # HuggingFace GPT-2, tiny, untied head (a tied one is refused), no dropout
        import transformers

        cfg = transformers.GPT2Config(n_embd=32, n_layer=4, n_head=2, vocab_size=100, n_positions=64,
                                      tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      use_cache=False, bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(cfg), torch.randint(0, 100, (8, 16), generator=g), \
            torch.randint(0, 100, (8, 16), generator=g)
    raise KeyError(name)


BATCH_NORM = ("dag_bn", "resnet18")
LR = 0.02  # small enough that a few steps stay smooth (a diverging run amplifies rounding)


def loss_fn(name: str):
    """The loss of a model's output and targets, as the schedule calls it per microbatch."""
    if name == "gpt2":  # eager gives the ModelOutput; the pipeline's last stage its one tensor, the logits
        return lambda out, y: F.cross_entropy(getattr(out, "logits", out).flatten(0, 1), y.flatten())
    return F.cross_entropy


def run_rank(rank: int, world: int, port: int, name: str, schedule: str, stages: int, microbatches: int,
             steps: int, out: str, balance: str = "flops") -> None:
    import torch.distributed as dist
    from torch.distributed import pipelining

    import bridge

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, x, y = build(name)
        micro = x[: x.shape[0] // microbatches]
        pipe = bridge.to_pipeline(model, (micro,), stages=stages, balance=balance)
        mine = [i for i in range(stages) if i % world == rank]  # interleaved: stage i on rank i % world
        built = [pipe.build_stage(i, "cpu") for i in mine]
        cls = {"gpipe": pipelining.ScheduleGPipe, "1f1b": pipelining.Schedule1F1B,
               "interleaved": pipelining.ScheduleInterleaved1F1B}[schedule]
        sched = cls(built if schedule == "interleaved" else built[0], n_microbatches=microbatches,
                    loss_fn=loss_fn(name))
        params = [p for i in mine for p in pipe.stage_module(i).parameters()]
        opt = torch.optim.SGD(params, lr=LR)
        losses, first_grads = [], {}
        for step in range(steps):
            opt.zero_grad()
            step_losses = []
            kw = {"losses": step_losses} if stages - 1 in mine else {}
            if 0 in mine:
                sched.step(x, target=y if stages - 1 in mine else None, **kw)
            else:
                sched.step(target=y if stages - 1 in mine else None, **kw)
            if step_losses:
                losses.append(float(torch.stack(step_losses).detach().mean()))
            if step == 0:
                first_grads = {n: p.grad.clone() for i in mine for n, p in pipe.stage_module(i).named_parameters()
                               if p.grad is not None}
            opt.step()
        state = {n: t.detach().clone() for i in mine for n, t in pipe.stage_module(i).state_dict().items()}
        torch.save({"rank": rank, "stages": mine, "losses": losses, "grads": first_grads, "state": state,
                    "describe": pipe.describe()}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def eager_reference(name: str, microbatches: int, steps: int, accumulate: bool = False) -> dict:
    """What one process computes, the same SGD steps: each step one forward/backward on the full batch (batch norm:
    its forward microbatch by microbatch, as a pipeline runs it, one backward), or with ``accumulate`` a backward
    per microbatch, gradients summed and divided by their number, as the pipeline's schedules do (the same
    arithmetic, so the steps match to rounding however ill-conditioned the model)."""
    model, x, y = build(name)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_of = loss_fn(name)
    losses, first_grads = [], {}
    chunks = list(zip(x.chunk(microbatches), y.chunk(microbatches)))
    for step in range(steps):
        opt.zero_grad()
        if accumulate:
            total = 0.0
            for a, b in chunks:
                loss = loss_of(model(a), b)
                loss.backward()
                total += float(loss.detach())
            for p in model.parameters():
                p.grad /= microbatches
            losses.append(total / microbatches)
        else:
            if name in BATCH_NORM:  # batch statistics are per microbatch in a pipeline
                loss = sum(loss_of(model(a), b) for a, b in chunks) / microbatches
            else:
                loss = loss_of(model(x), y)
            loss.backward()
            losses.append(float(loss.detach()))
        if step == 0:
            first_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
    return {"losses": losses, "grads": first_grads, "state": {n: t.detach().clone()
                                                               for n, t in model.state_dict().items()}}
