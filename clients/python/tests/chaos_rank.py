"""One trainer rank of the chaos test (test_chaos.py), run as its own OS
process: it reads one whole epoch through ShardStreamDataset with stripes
over two loaders, takes a simulated training step per batch, and records
every batch as a JSON line (flushed at once, so the test can watch its
progress): ``{"step", "t", "wall", "reconnects", "ids"}``, ``t`` being
``time.monotonic()`` as the batch reached the training loop (one clock for
every process on Linux), ``wall`` the same as ``time.time()`` (the clock of
the log lines) and ``ids`` the batch's ``[shard, index]`` pairs.
A last line ``{"done": true, ...}`` holds the plan's counts and the
client's stats.

    python -m tests.chaos_rank --address-file FILE --rank R --world-size N \
        --batch-size B --seed S --step-time SECONDS --out FILE

The test starts the ranks before the cluster, so that importing torch (seconds
on a loaded machine) overlaps with packing the dataset; a rank waits for
the coordinator's address to appear in ``--address-file``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import shardstream

START_TIMEOUT = 300.0


def wait_address(path: Path) -> str:
    """The coordinator's address, once the test wrote it (whole, by a rename)."""
    deadline = time.monotonic() + START_TIMEOUT
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no coordinator address in {path} after {START_TIMEOUT}s")
        time.sleep(0.05)  # polling for the file, not synchronising on time
    return path.read_text().strip()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chaos_rank")
    p.add_argument("--address-file", type=Path, required=True)
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world-size", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--step-time", type=float, required=True)
    p.add_argument("--loaders-per-rank", type=int, default=2)
    p.add_argument("--retry-timeout", type=float, default=60.0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    # The client's reconnect warnings go to stderr, the rank's log file.
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s rank {a.rank} %(levelname)s %(message)s",
    )
    address = wait_address(a.address_file)
    logging.info("started: coordinator %s", address)
    ds = shardstream.ShardStreamDataset(
        address,
        rank=a.rank,
        world_size=a.world_size,
        batch_size=a.batch_size,
        seed=a.seed,
        epoch=0,
        last_batch="drop",
        max_loaders_per_rank=a.loaders_per_rank,
        timeout=a.retry_timeout,
        retry_timeout=a.retry_timeout,
    )
    with open(a.out, "w") as out:
        for batch in ds:
            t = time.monotonic()
            ids = []
            for s in batch:
                # Each sample's cls is its key's number (conftest.write_files):
                # a sample mixed up with another's fields is noticed here.
                if int(s["cls"]) != int(s["__key__"]):
                    key, cls = s["__key__"], s["cls"]
                    raise AssertionError(f"step {batch.step}: sample {key} has cls {cls!r}")
                ids.append([s["__shard__"], s["__index__"]])
            rec = {
                "step": batch.step,
                "t": t,
                "wall": time.time(),  # to match the client's log lines
                "reconnects": ds.stats.reconnects,
                "ids": ids,
            }
            out.write(json.dumps(rec) + "\n")
            out.flush()
            if batch.step == 0:
                logging.info("first batch")
            # The simulated training step: workload pacing the epoch so that
            # it lasts long enough for the failures, not synchronisation.
            time.sleep(a.step_time)
        plan = ds.last_plan
        assert plan is not None
        done = {
            "done": True,
            "steps": plan.steps,
            "samples": plan.samples,
            "dropped": plan.dropped,
            "reconnects": ds.stats.reconnects,
            "last_error": ds.stats.last_error,
        }
        out.write(json.dumps(done) + "\n")
    logging.info("epoch done: %s", done)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
