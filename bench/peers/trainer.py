"""The trainer process: one system reads one epoch of one workload through
the common loop, and the process prints its measurements as one JSON line.

It is started by the driver, pinned (or not) with taskset; everything the
system runs (DataLoader workers, their threads and children) is inside it.
With ``--save-state FILE`` it saves the system's state at half the epoch;
with ``--resume FILE`` it starts from such a state and stops at the first
batch (the time to resume)."""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .common import WORKLOADS, PeakRSS, Result, tree_cpu
from .systems import BUILDERS, Config, batch_samples, tensors


def touch(batch: Any) -> float:
    """What a training step would do with the batch at the least: read
    every tensor once."""
    total = 0.0
    for t in tensors(batch):
        total += float(t.sum(dtype=torch.int64))
    return total


def run(a: argparse.Namespace) -> Result:
    wl = WORKLOADS[a.workload]
    r = Result(system=a.system, workload=a.workload, setup=a.setup, rep=a.rep)
    resume = pickle.loads(Path(a.resume).read_bytes()) if a.resume else None
    cfg = Config(
        system=a.system,
        wl=wl,
        endpoint=a.endpoint,
        address=a.address,
        seed=a.seed,
        workers=a.workers,
        cache_dir=Path(a.cache_dir),
        resume=resume,
    )
    mean_bytes = a.dataset_bytes / wl.samples
    steps = wl.samples // wl.batch_size
    cpu0 = tree_cpu()
    with PeakRSS() as rss:
        start = time.perf_counter()
        reader = BUILDERS[a.system](cfg)
        it = iter(reader.loader)
        for batch in it:
            if r.batches == 0:
                r.first_batch_s = time.perf_counter() - start
                if resume is not None:
                    break
            touch(batch)
            r.batches += 1
            r.samples += batch_samples(batch)
            if r.batches == steps // 2 and a.save_state:
                if reader.save is None:
                    r.note = "cannot resume"
                else:
                    Path(a.save_state).write_bytes(pickle.dumps(reader.save()))
        r.wall_s = time.perf_counter() - start
        del batch, it, reader  # the DataLoader joins its workers: their CPU is counted
    r.cpu_s = tree_cpu() - cpu0
    r.peak_rss = rss.peak
    r.stored_bytes = int(r.samples * mean_bytes)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--system", required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--setup", required=True)
    ap.add_argument("--rep", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--address", default="")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--dataset-bytes", type=int, required=True)
    ap.add_argument("--save-state", default="")
    ap.add_argument("--resume", default="")
    a = ap.parse_args()
    r = run(a)
    print(json.dumps(r.to_json()), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
