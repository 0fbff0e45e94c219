"""DDP training under torchrun that survives being killed: checkpoint, resume.

Run by torchrun, one process per rank, on CPU (gloo):

    torchrun --standalone --nproc_per_node 2 examples/train_ddp.py \\
        --address 127.0.0.1:7070 --checkpoint-dir ckpt --record-dir records --epoch 0

Every rank reads its batches from ``shardstream serve`` through a
:class:`shardstream.ShardStreamDataset` wrapped in torchdata's
``StatefulDataLoader`` and trains a linear model wrapped in
DistributedDataParallel. Every ``--checkpoint-every`` steps the ranks agree
on the step and on where the data stands (every rank's loader state gives
the same resume token), then rank 0 writes model, optimizer and the
loader's state to ``checkpoint.pt``, atomically (a temporary file renamed
over the old one), so a kill at any moment leaves the previous or the new
checkpoint, never half of one.

Started again, it resumes from the checkpoint, with the same or another
number of ranks and of DataLoader workers: the loader state is loaded into
the dataset (``ds.load_state_dict``), which merges its workers' positions
into the job's resume token, valid for any world size and num_workers;
with the layout unchanged it is also given to the loader
(``loader.load_state_dict``), torchdata's own restore. No sample is lost or
repeated across the restart: the steps after the checkpoint are trained
again, on the data they had.

Each rank appends one JSON line per step to ``RECORD_DIR/rank{R}.jsonl``:
``{"step": S, "ids": [[shard, index], ...]}``, after a ``{"start": ...}``
line and before a final ``{"done": ...}`` line, so a test can check that,
counting only the steps up to each run's last checkpoint, every sample of
the epoch was trained on exactly once.

Features are the first ``--dim`` values of ``--feature-field`` (an ``.npy``
array, or raw bytes scaled to [0, 1]); the class is ``cls`` modulo
``--classes``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchdata.stateful_dataloader import StatefulDataLoader

try:
    import shardstream
except ImportError:  # run from a checkout without `pip install -e clients/python`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))
    import shardstream

CHECKPOINT = "checkpoint.pt"


class Decode:
    """A Batch to (features, classes, sample ids), in the DataLoader worker.
    A class, so a spawned worker could unpickle it."""

    def __init__(self, field: str, dim: int, classes: int) -> None:
        self.field, self.dim, self.classes = field, dim, classes

    def features(self, value: bytes) -> np.ndarray[Any, Any]:
        if self.field.endswith(".npy"):
            arr = np.load(io.BytesIO(value), allow_pickle=False).astype(np.float32).ravel()
        else:
            arr = np.frombuffer(value, dtype=np.uint8).astype(np.float32) / 255
        out = np.zeros(self.dim, dtype=np.float32)
        out[: min(self.dim, arr.size)] = arr[: self.dim]
        return out

    def __call__(self, batch: shardstream.Batch) -> dict[str, torch.Tensor]:
        return {
            "x": torch.from_numpy(np.stack([self.features(s[self.field]) for s in batch])),
            "y": torch.tensor([int(s["cls"]) % self.classes for s in batch]),
            "ids": torch.tensor([(s["__shard__"], s["__index__"]) for s in batch]),
        }


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Writes ``obj`` to ``path`` so that ``path`` is always a whole
    checkpoint: a temporary file in the same directory, synced, renamed."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash of the host
    finally:
        os.close(dir_fd)


def checkpoint(
    args: argparse.Namespace,
    step: int,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loader: StatefulDataLoader,
) -> None:
    """Every rank takes its loader's state after ``step``; they must all
    stand at the same step and resume token (the token is the same on every
    rank at a step), then rank 0 writes and the others wait for it."""
    data = loader.state_dict()
    mine = {"step": step, **shardstream.resume_state(data)}
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    if any(other != mine for other in every):
        raise RuntimeError(f"ranks disagree on where they stand at a checkpoint: {every}")
    if dist.get_rank() == 0:
        state = {
            "step": step,
            "epoch": args.epoch,
            "world_size": dist.get_world_size(),
            "num_workers": args.num_workers,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "data": data,
        }
        save_atomic(state, args.checkpoint_dir / CHECKPOINT)
    dist.barrier()


def record(out: IO[str], line: dict[str, Any]) -> None:
    out.write(json.dumps(line) + "\n")
    out.flush()  # a SIGKILL loses nothing written before it


def train(args: argparse.Namespace) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Linear(args.dim, args.classes))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    ds = shardstream.ShardStreamDataset(
        args.address,
        seed=args.seed,
        epoch=args.epoch,
        batch_size=args.batch_size,
        rank=rank,
        world_size=world,
        decode=Decode(args.feature_field, args.dim, args.classes),
    )
    # Workers from shardstream's fork server: load_state_dict may have used
    # gRPC here, and a process that has cannot fork safely.
    loader = StatefulDataLoader(
        ds,
        batch_size=None,
        num_workers=args.num_workers,
        multiprocessing_context=shardstream.worker_context() if args.num_workers else None,
    )
    step, resumed = 0, "no"
    path = args.checkpoint_dir / CHECKPOINT
    if path.exists():
        ckpt = torch.load(path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if ckpt["epoch"] == args.epoch:
            step = ckpt["step"]
            # The loader state merged into the job's token: any world size,
            # any num_workers (torchdata refuses another num_workers itself).
            ds.load_state_dict(ckpt["data"])
            resumed = "dataset"
            if (ckpt["world_size"], ckpt["num_workers"]) == (world, args.num_workers):
                # Same layout: torchdata's own restore, each worker where it stood.
                loader.load_state_dict(ckpt["data"])
                resumed = "loader"

    args.record_dir.mkdir(parents=True, exist_ok=True)
    with (args.record_dir / f"rank{rank}.jsonl").open("a") as out:
        head = {"start": step, "world_size": world, "num_workers": args.num_workers}
        record(out, {**head, "resumed": resumed, "pid": os.getpid()})
        for batch in loader:
            opt.zero_grad()
            loss = loss_fn(model(batch["x"]), batch["y"])
            loss.backward()
            opt.step()
            step += 1
            record(out, {"step": step, "ids": batch["ids"].tolist(), "loss": loss.item()})
            if step % args.checkpoint_every == 0:
                checkpoint(args, step, model, opt, loader)
            if step == args.stall_after_step:
                threading.Event().wait()  # a hung node: only a kill ends it
        # The end of the epoch: a last checkpoint, so a restart starts nothing again.
        checkpoint(args, step, model, opt, loader)
        record(out, {"done": step})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--address", required=True, help="host:port of shardstream serve")
    p.add_argument("--checkpoint-dir", type=Path, required=True)
    p.add_argument("--record-dir", type=Path, required=True, help="per-step sample ids per rank")
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers per rank")
    p.add_argument("--batch-size", type=int, default=16, help="samples per step per rank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=4, help="steps between checkpoints")
    p.add_argument("--feature-field", default="input.npy", help="the sample field to learn from")
    p.add_argument("--dim", type=int, default=64, help="features per sample")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument(
        "--stall-after-step",
        type=int,
        default=0,
        help="stop making progress after this step until killed (tests' stand-in for a hang)",
    )
    args = p.parse_args()
    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # rank and world size from torchrun's environment
    try:
        train(args)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
