"""Train one model on k local processes with torch.distributed.pipelining, cut into stages by bridge.

    python examples/pipeline_training.py                       # 2 ranks, gloo, GPipe, 4 steps
    python examples/pipeline_training.py --ranks 3 --schedule 1f1b
    python examples/pipeline_training.py --backend nccl        # one GPU per rank

The model (a small residual network with a concat merge and a skip that crosses the cuts) is built from a seed
on every rank. Each rank asks ``bridge.to_pipeline`` for the same cut (balanced by FLOPs, traced on one
microbatch), builds its own stage with ``build_stage`` and runs the schedule; the last rank gets the loss. The
parent then trains a copy of the model in one process, eagerly, and checks that every step's loss and the final
weights match (1e-5), loading the stages' weights back into the model by their names.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, c: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.block1 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(4, c), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(4, c), nn.ReLU())
        self.left, self.right = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1)
        self.merge = nn.Conv2d(2 * c, c, 1)
        self.head = nn.Linear(2 * c, classes)

    def forward(self, x):
        s = F.relu(self.stem(x))
        h = s + self.block1(s)
        h = h + self.block2(h)
        h = self.merge(torch.cat([self.left(h), self.right(h)], 1))
        return self.head(torch.cat([h.mean((2, 3)), s.mean((2, 3))], 1))


def data(steps: int, batch: int):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 3, 16, 16, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(steps)]


def rank_main(rank: int, a: argparse.Namespace, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed import pipelining

    import bridge

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    device = torch.device(f"cuda:{rank}") if a.backend == "nccl" else torch.device("cpu")
    dist.init_process_group(a.backend, rank=rank, world_size=a.ranks)
    try:
        torch.manual_seed(0)
        model = Net()
        batches = data(a.steps, a.batch)
        micro = batches[0][0][: a.batch // a.microbatches]  # one microbatch: what each stage runs at a time
        pipe = bridge.to_pipeline(model, (micro,), stages=a.ranks)
        if rank == 0:
            print(pipe.describe())
        stage = pipe.build_stage(rank, device)
        schedule = {"gpipe": pipelining.ScheduleGPipe, "1f1b": pipelining.Schedule1F1B}[a.schedule](
            stage, n_microbatches=a.microbatches, loss_fn=F.cross_entropy)
        opt = torch.optim.SGD(stage.submod.parameters(), lr=0.05)
        losses = []
        for x, y in batches:
            opt.zero_grad()
            last = rank == a.ranks - 1
            step_losses = [] if last else None
            if rank == 0:
                schedule.step(x.to(device), target=y.to(device) if last else None, losses=step_losses)
            else:
                schedule.step(target=y.to(device) if last else None, losses=step_losses)
            if last:
                losses.append(float(torch.stack(step_losses).detach().mean()))
            opt.step()
        torch.save({"losses": losses, "state": {k: v.cpu() for k, v in stage.submod.state_dict().items()}},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--schedule", choices=["gpipe", "1f1b"], default="gpipe")
    ap.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--microbatches", type=int, default=4)
    a = ap.parse_args(argv)
    if a.backend == "nccl" and torch.cuda.device_count() < a.ranks:
        print(f"nccl needs {a.ranks} GPUs, this machine has {torch.cuda.device_count()}")
        return 2
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(rank_main, args=(a, port, out), nprocs=a.ranks, join=True, start_method="spawn")
        ranks = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(a.ranks)]
    pipeline_losses = ranks[-1]["losses"]

    # the same training in one process, eagerly
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    eager_losses = []
    for x, y in data(a.steps, a.batch):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        eager_losses.append(float(loss.detach()))

    # the stages' weights go back into a fresh model by their names
    torch.manual_seed(0)
    trained = Net()
    missing, unexpected = trained.load_state_dict({k: v for r in ranks for k, v in r["state"].items()}, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    worst = max((trained.state_dict()[k] - v).abs().max().item() for k, v in model.state_dict().items())
    for step, (p, e) in enumerate(zip(pipeline_losses, eager_losses)):
        print(f"step {step}: pipeline loss {p:.6f}  eager loss {e:.6f}")
    ok = len(pipeline_losses) == a.steps and all(abs(p - e) <= 1e-5 * max(1.0, abs(e))
                                                  for p, e in zip(pipeline_losses, eager_losses)) and worst <= 1e-5
    print(f"weights after {a.steps} steps: max |pipeline - eager| = {worst:.2e}")
    print("parity OK" if ok else "parity FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
