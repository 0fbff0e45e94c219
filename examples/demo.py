"""Trains a tiny classifier on two ranks reading through shardstream.

What ``make demo`` runs once ``shardstream serve`` is up: it spawns
``--world-size`` trainer processes joined in a gloo process group, wraps a
linear model in DistributedDataParallel, and has every rank read its batches
from the server with :class:`shardstream.ShardStreamDataset`. After each epoch
it prints what was read and checks, from the (shard, index) of every sample
every rank received, that each sample of the dataset arrived exactly once
(the ones the drop-last policy left out aside).

    python examples/demo.py --address 127.0.0.1:7070 --world-size 2 --epochs 2

Samples hold ``input.npy`` (float32 features) and ``cls`` (the class), as
``examples/make_dataset.py`` writes them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

try:
    import shardstream
except ImportError:  # run from a checkout without `pip install -e clients/python`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))
    import shardstream


class Decoded:
    """One batch as tensors, with what the exactly-once check needs."""

    def __init__(self, batch: shardstream.Batch) -> None:
        self.x = torch.from_numpy(
            np.stack([np.load(io.BytesIO(s["input.npy"]), allow_pickle=False) for s in batch])
        )
        self.y = torch.tensor([int(s["cls"]) for s in batch])
        self.ids = [(int(s["__shard__"]), int(s["__index__"])) for s in batch]
        self.nbytes = sum(len(v) for s in batch for v in s.values() if isinstance(v, bytes))
        self.resume_token = batch.resume_token


def train_rank(rank: int, args: argparse.Namespace, port: int, out: str) -> None:
    """One trainer process: the body torch.multiprocessing.spawn runs."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.world_size
    )
    try:
        # Rank and world size come from the process group.
        ds = shardstream.ShardStreamDataset(
            args.address, seed=args.seed, batch_size=args.batch_size, decode=Decoded
        )
        torch.manual_seed(0)
        dim, classes = args.dim, args.classes
        model = DistributedDataParallel(nn.Linear(dim, classes))
        opt = torch.optim.SGD(model.parameters(), lr=args.lr)
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(args.epochs):
            ds.set_epoch(epoch)
            ids: list[tuple[int, int]] = []
            steps = nbytes = correct = 0
            loss_sum = wait = 0.0
            start = time.perf_counter()
            it = iter(DataLoader(ds, batch_size=None, num_workers=0))
            while True:
                t0 = time.perf_counter()
                b = next(it, None)
                wait += time.perf_counter() - t0  # time in the data path: network, decode
                if b is None:
                    break
                opt.zero_grad()
                logits = model(b.x)
                loss = loss_fn(logits, b.y)
                loss.backward()  # DDP all-reduces: every rank must take as many steps
                opt.step()
                loss_sum += loss.item()
                correct += int((logits.argmax(1) == b.y).sum())
                ids.extend(b.ids)
                steps += 1
                nbytes += b.nbytes
            seconds = time.perf_counter() - start
            plan = ds.last_plan
            result: dict[str, Any] = {
                "rank": rank,
                "epoch": epoch,
                "steps": steps,
                "ids": ids,
                "bytes": nbytes,
                "seconds": seconds,
                "wait": wait,
                "loss": loss_sum / max(steps, 1),
                "accuracy": correct / max(len(ids), 1),
                "dropped": plan.dropped if plan else -1,
                "padded": plan.padded if plan else -1,
                "reconnects": ds.stats.reconnects,
                "state": ds.state_dict(),
            }
            Path(out, f"rank{rank}-epoch{epoch}.json").write_text(json.dumps(result))
            dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def expected_samples(args: argparse.Namespace) -> int:
    """Samples in the dataset: from its manifest when --dataset-dir is
    given (and checked against the server), else from the server."""
    info = shardstream.ShardStreamDataset(args.address, batch_size=1).describe()
    if args.dataset_dir is None:
        return info.samples
    manifest = json.loads(Path(args.dataset_dir, "manifest.json").read_text())
    n = sum(int(s["samples"]) for s in manifest["shards"])
    if n != info.samples:
        sys.exit(
            f"demo: the manifest in {args.dataset_dir} lists {n} samples, the server {info.samples}"
        )
    return n


def check_epoch(epoch: int, results: list[dict[str, Any]], total: int) -> bool:
    """Prints one epoch's figures and whether every sample arrived once."""
    counts = Counter(tuple(i) for r in results for i in r["ids"])
    delivered = sum(counts.values())
    repeated = sum(1 for c in counts.values() if c > 1)
    dropped = results[0]["dropped"]
    steps = [r["steps"] for r in results]
    seconds = max(r["seconds"] for r in results)
    mb = sum(r["bytes"] for r in results) / 1e6
    wait = max(r["wait"] for r in results)
    ok = repeated == 0 and delivered + dropped == total and len(set(steps)) == 1
    tokens = {r["state"]["resume_token"] for r in results}
    print(
        f"epoch {epoch}: {delivered} samples read in {seconds:.2f}s "
        f"({delivered / seconds:.0f} samples/s), "
        f"{mb / seconds:.1f} MB/s ({mb:.1f} MB; {wait:.2f}s of it in the data path, "
        f"{mb / max(wait, 1e-9):.1f} MB/s there), steps per rank {steps}, "
        f"loss {np.mean([r['loss'] for r in results]):.3f}, "
        f"accuracy {np.mean([r['accuracy'] for r in results]):.2%}"
    )
    print(
        f"  exactly once: {'yes' if ok else 'NO'} "
        f"({len(counts)} distinct + {dropped} dropped = {len(counts) + dropped} of {total}; "
        f"{repeated} repeated; same resume token on every rank: {len(tokens) == 1})"
    )
    return ok and len(tokens) == 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--address", required=True, help="host:port of shardstream serve")
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--dim", type=int, default=64, help="features per sample (make_dataset --dim)")
    p.add_argument("--classes", type=int, default=8, help="classes (make_dataset --classes)")
    p.add_argument("--dataset-dir", type=Path, help="the packed dataset, to count its samples")
    args = p.parse_args()
    if args.world_size < 1 or args.epochs < 1 or args.batch_size < 1:
        p.error("--world-size, --epochs and --batch-size must be positive")

    total = expected_samples(args)
    print(
        f"dataset: {total} samples at {args.address}; {args.world_size} ranks, "
        f"batch size {args.batch_size}, {args.epochs} epochs"
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shardstream-demo-") as out:
        # Each rank is its own process, as under torchrun; spawn (not fork)
        # starts them clean.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        mp.spawn(  # type: ignore[attr-defined,no-untyped-call]
            train_rank, args=(args, free_port(), out), nprocs=args.world_size, join=True
        )
        ok = True
        for epoch in range(args.epochs):
            results = [
                json.loads(Path(out, f"rank{r}-epoch{epoch}.json").read_text())
                for r in range(args.world_size)
            ]
            ok = check_epoch(epoch, results, total) and ok
    print(f"demo: {'PASS' if ok else 'FAIL'} in {time.perf_counter() - start:.1f}s")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
