"""make bench-client: the Python client against the Go client on one stream.

For each dataset (small samples of ~0.5 KB, token samples of 8 KiB) it packs
generated files once (cached under --work), starts one ``shardstream
serve`` on loopback, and reads rank 0's whole epoch (world size 1) with:

- the Go client (``shardstream-bench client``), per-sample and columnar;
- the Python client, columnar tensors out, with num_workers 0 and 2;
- the Python client's sample-dict mode, num_workers 0, for comparison.

Each reader is a child process that measures its own CPU time (user +
system, DataLoader workers included) over the epoch, start-up excluded. It prints MB/s
(of field bytes), samples/s and client CPU seconds per GB for each, and last
``python client / go client (MB/s): R``: the lower over the datasets of
Python columnar (num_workers 0) over Go columnar.

    python bench/bench_client.py --bin bin/shardstream --bench-bin bin/shardstream-bench
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "clients" / "python"))

from tests.servertest import Server  # noqa: E402

# name: (samples, bytes of the "bin"/"tokens" field, field name, batch size)
DATASETS: dict[str, tuple[int, int, str, int]] = {
    "small-0.5KB": (160_000, 500, "bin", 256),
    "tokens-8KiB": (16_000, 8192, "tokens", 32),
}


def make_dataset(bin_path: Path, work: Path, name: str) -> Path:
    samples, size, field, _ = DATASETS[name]
    out = work / name / "dataset"
    if (out / "manifest.json").exists():
        return out
    files = work / name / "files"
    files.mkdir(parents=True, exist_ok=True)
    block = os.urandom(size + 4096)  # incompressible, like tokens and images
    for i in range(samples):
        (files / f"{i:08d}.{field}").write_bytes(block[i % 4096 : i % 4096 + size])
        (files / f"{i:08d}.cls").write_bytes(str(i % 1000).encode())
    subprocess.run(
        [
            str(bin_path),
            "pack",
            "--input",
            str(files),
            "--output",
            str(out),
            "--shard-size",
            "64MiB",
        ],
        check=True,
        capture_output=True,
    )
    return out


def read_python(address: str, mode: str, workers: int, batch_size: int) -> dict[str, Any]:
    """Runs in the child: one epoch through a DataLoader, items kept as
    they come (tensors, or sample dicts), nothing decoded."""
    from torch.utils.data import DataLoader

    import shardstream

    ds = shardstream.ShardStreamDataset(
        address, batch_size=batch_size, columnar=(mode == "columnar")
    )
    cpu0 = own_cpu()
    start = time.perf_counter()
    batches = samples = nbytes = 0
    # DataLoader's default fork: this child has made no gRPC call yet (the
    # safe case), and forked workers are its children, so own_cpu counts them.
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    for b in loader:
        batches += 1
        samples += len(b)
        if isinstance(b, shardstream.ColumnarBatch):
            nbytes += b.nbytes
        else:
            nbytes += sum(len(v) for s in b for k, v in s.items() if not k.startswith("__"))
    wall = time.perf_counter() - start
    del b, loader  # the workers are joined: their CPU time is counted
    cpu = own_cpu() - cpu0
    return {"batches": batches, "samples": samples, "bytes": nbytes, "wall_s": wall, "cpu_s": cpu}


def own_cpu() -> float:
    """CPU seconds of this process and its reaped children (DataLoader workers)."""
    t = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        t += ru.ru_utime + ru.ru_stime
    return t


def run_child(cmd: list[str]) -> dict[str, Any]:
    """Runs a reader and returns what it measured: the CPU seconds it (and
    its DataLoader workers) spent reading the epoch, not starting up
    (importing torch alone takes seconds)."""
    r = subprocess.run(cmd, check=True, capture_output=True, text=True)
    line = r.stdout.strip().splitlines()[-1]
    if line.startswith("{"):
        res = json.loads(line)
    else:
        res = {k: float(v) for k, v in (kv.split("=") for kv in line.split())}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(REPO / "bin" / "shardstream"))
    ap.add_argument("--bench-bin", default=str(REPO / "bin" / "shardstream-bench"))
    ap.add_argument("--work", default=str(REPO / ".cache" / "bench-client"))
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--child", nargs=4, metavar=("ADDR", "MODE", "WORKERS", "BATCH"))
    a = ap.parse_args()
    if a.child:
        addr, mode, workers, batch = a.child
        print(json.dumps(read_python(addr, mode, int(workers), int(batch))))
        return

    work = Path(a.work)
    ratios = []
    print(f"{'dataset':<12} {'client':<28} {'MB/s':>8} {'samples/s':>11} {'CPU s/GB':>9}")
    for name in a.datasets.split(","):
        _, _, _, batch = DATASETS[name]
        data = make_dataset(Path(a.bin), work, name)
        server = Server(Path(a.bin), str(data), log=work / name / "serve.log")
        server.start()
        try:
            go_cmd = [a.bench_bin, "client", "--addr", server.address, "--batch-size", str(batch)]
            py_cmd = [sys.executable, __file__, "--child", server.address]
            runs = {
                "go per-sample": go_cmd,
                "go columnar": [*go_cmd, "--columnar"],
                "python columnar, workers 0": [*py_cmd, "columnar", "0", str(batch)],
                "python columnar, workers 2": [*py_cmd, "columnar", "2", str(batch)],
                "python dicts, workers 0": [*py_cmd, "dicts", "0", str(batch)],
            }
            # One untimed pass warms the server's page cache and plan.
            run_child(go_cmd)
            mbps: dict[str, float] = {}
            for label, cmd in runs.items():
                res = run_child(cmd)
                cpu = res["cpu_s"]
                gb = res["bytes"] / 1e9
                mbps[label] = res["bytes"] / 1e6 / res["wall_s"]
                print(
                    f"{name:<12} {label:<28} {mbps[label]:8.0f} "
                    f"{res['samples'] / res['wall_s']:11.0f} {cpu / gb:9.2f}",
                    flush=True,
                )
            r = mbps["python columnar, workers 0"] / mbps["go columnar"]
            ratios.append(r)
            print(f"{name:<12} python columnar / go columnar (MB/s): {r:.2f}")
        finally:
            server.stop()
    print(f"python client / go client (MB/s): {min(ratios):.2f}")


if __name__ == "__main__":
    main()
