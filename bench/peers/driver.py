"""make bench: every system on every workload, pinned to a trainer CPU budget
and unpinned, ≥3 repetitions in alternating order; prints the table and the
ratios, writes the raw results, the markdown table and the chart.

    .bench-venv/bin/python -m bench.peers.driver --bin bin/shardstream --minio .tools/bin/minio

Pinned: the trainer process and everything it starts run on the last core
(taskset -c N-1); MinIO and shardstream's server on the others. Shared: no
pinning at all. See bench/peers/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .common import BUCKET, SYSTEMS, WORKLOADS, Result, store_env
from .data import sample_files, shard_keys, write_all
from .report import chart, summarize, table
from .systems import workers

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "clients" / "python"))

from tests.servertest import MinIO, Server, free_port  # noqa: E402


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Every thread of a running process onto cpus (Go servers start their
    threads before we could pin them one by one)."""
    spec = ",".join(map(str, sorted(cpus)))
    subprocess.run(["taskset", "-a", "-p", "-c", spec, str(pid)], check=True, capture_output=True)


def scrape(addr: str, name: str) -> int:
    """A counter's value from a /metrics page (summed over its labels)."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.work = Path(a.work).resolve()
        self.all_cpus = os.sched_getaffinity(0)
        cpus = sorted(self.all_cpus)
        self.trainer_cpus = {cpus[-1]}
        self.server_cpus = set(cpus[:-1]) or self.trainer_cpus
        self.minio: MinIO | None = None
        self.endpoint = ""
        self.env: dict[str, str] = {}
        self.dataset_bytes: dict[str, int] = {}
        self.tar_bytes: dict[str, int] = {}

    def start_store(self) -> None:
        root = self.work / "minio"
        shutil.rmtree(root, ignore_errors=True)
        (root / "data").mkdir(parents=True)
        self.minio = MinIO(self.a.minio, root)
        self.minio.start()
        self.endpoint = self.minio.endpoint
        self.env = {**os.environ, **store_env(self.endpoint)}
        os.environ.update(store_env(self.endpoint))  # boto3 in this process
        t = time.perf_counter()
        write_all(self.work, Path(self.a.bin), self.endpoint, self.env)
        print(f"datasets written to {self.endpoint} in {time.perf_counter() - t:.0f}s", flush=True)
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint)
        for wl in WORKLOADS.values():
            files = sample_files(self.work, wl)
            self.dataset_bytes[wl.name] = sum(
                p.stat().st_size for p in files.iterdir() if not p.name.startswith(".")
            )
            self.tar_bytes[wl.name] = sum(
                s3.head_object(Bucket=BUCKET, Key=k)["ContentLength"]
                for k in shard_keys(self.endpoint, f"wds/{wl.name}", ".tar")
            )

    def pin(self, setup: str) -> None:
        """This process (so the servers it starts) and MinIO onto the
        server cores, or everything onto every core."""
        cpus = self.server_cpus if setup == "pinned" else self.all_cpus
        os.sched_setaffinity(0, cpus)
        assert self.minio is not None
        assert self.minio.proc is not None
        set_affinity(self.minio.proc.pid, cpus)

    def server(self, wl: str) -> tuple[Server, str]:
        """A fresh shardstream serve over the tar shards on MinIO: cold, its
        memory cache off and no disk cache, so the pass reads the store."""
        metrics = f"127.0.0.1:{free_port()}"
        s = Server(
            Path(self.a.bin),
            f"s3://{BUCKET}/wds/{wl}",
            log=self.work / "serve.log",
            extra=(
                "--s3-endpoint",
                self.endpoint,
                "--s3-path-style",
                "--memory-cache-size",
                "0",
                "--metrics-addr",
                metrics,
            ),
            env=self.env,
        )
        s.start()
        return s, metrics

    def trainer(self, setup: str, args: list[str]) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "bench.peers.trainer", *args]
        if setup == "pinned":
            cmd = ["taskset", "-c", ",".join(map(str, sorted(self.trainer_cpus))), *cmd]
        r = subprocess.run(
            cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=self.a.run_timeout
        )
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr[-4000:]}")
        out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
        return out

    def attempt(
        self, system: str, wl: str, setup: str, args: list[str]
    ) -> tuple[dict[str, Any], int | None]:
        """One trainer run (with a fresh shardstream server for shardstream):
        what it measured, and the store bytes the server fetched."""
        if system != "shardstream":
            return self.trainer(setup, args), None
        server, metrics = self.server(wl)
        try:
            out = self.trainer(setup, [*args, "--address", server.address])
            return out, scrape(metrics, "shardstream_read_bytes_total")
        finally:
            server.stop()

    def one(self, system: str, wl: str, setup: str, rep: int) -> Result:
        cache = self.work / "cache"
        state = self.work / "state.pkl"
        n_workers = workers(setup, system, wl)
        base = [
            "--system", system, "--workload", wl, "--setup", setup, "--rep", str(rep),
            "--seed", str(rep), "--endpoint", self.endpoint, "--workers", str(n_workers),
            "--cache-dir", str(cache), "--dataset-bytes", str(self.dataset_bytes[wl]),
        ]  # fmt: skip
        fetched: int | None = None
        res: dict[str, Any] = {}
        for phase in ("epoch", "resume"):
            cannot = "cannot resume" in res.get("note", "")
            if phase == "resume" and (cannot or setup not in self.a.resume_setups):
                break
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(parents=True)
            extra = ["--save-state", str(state)] if phase == "epoch" else ["--resume", str(state)]
            try:
                out, fetched_now = self.attempt(system, wl, setup, [*base, *extra])
            except RuntimeError as e:
                # A peer that crashes once is run again (and the crash
                # reported); twice ends the benchmark.
                failure = str(e).strip().splitlines()[-1]
                print(f"{setup} {wl} {system} rep {rep} {phase}: failed, once more: {failure}")
                shutil.rmtree(cache, ignore_errors=True)
                cache.mkdir(parents=True)
                out, fetched_now = self.attempt(system, wl, setup, [*base, *extra])
                out["note"] = (out.get("note", "") + f" (retried after: {failure})").strip()
            if phase == "epoch":
                res, fetched = out, fetched_now
            else:
                res["resume_s"] = out["first_batch_s"]
        state.unlink(missing_ok=True)
        r = Result(**res)
        r.fetched_bytes = fetched
        if fetched is not None:
            r.shard_bytes = self.tar_bytes[wl]
        return r

    def run(self, log: Path) -> list[Result]:
        """Every run; each result is also appended to log as it comes."""
        results: list[Result] = []
        systems = self.a.systems.split(",")
        for setup in self.a.setups.split(","):
            self.pin(setup)
            for rep in range(self.a.reps):
                # Alternating order: forward on even repetitions, reversed on odd.
                order = systems if rep % 2 == 0 else systems[::-1]
                for wl in self.a.workloads.split(","):
                    for system in order:
                        r = self.one(system, wl, setup, rep)
                        results.append(r)
                        with log.open("a") as f:
                            f.write(json.dumps(r.to_json()) + "\n")
                        print(progress(r), flush=True)
        self.pin("shared")
        return results


def progress(r: Result) -> str:
    line = (
        f"{r.setup:<6} {r.workload:<6} {r.system:<11} rep {r.rep}: {r.samples} samples "
        f"{r.samples / r.wall_s:8.0f} samples/s {r.stored_bytes / 1e6 / r.wall_s:6.0f} MB/s "
        f"{r.cpu_s / (r.stored_bytes / 1e9):6.2f} CPU s/GB, first batch {r.first_batch_s:.2f}s"
    )
    if r.resume_s is not None:
        line += f", resume {r.resume_s:.2f}s"
    if r.fetched_bytes is not None and r.shard_bytes:
        line += f", store bytes fetched {r.fetched_bytes / r.shard_bytes:.3f}x the shards"
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", default=str(REPO / "bin" / "shardstream"))
    ap.add_argument("--minio", default=str(REPO / ".tools" / "bin" / "minio"))
    ap.add_argument("--work", default=str(REPO / ".cache" / "bench-peers"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--setups", default="pinned,shared")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument(
        "--resume-setups", default="pinned", help="setups that also measure the resume at 50 %%"
    )
    ap.add_argument("--run-timeout", type=float, default=600)
    ap.add_argument("--chart", default=str(REPO / "docs" / "benchmarks.png"))
    ap.add_argument("--report", default="", help="only the table and chart, from a results.jsonl")
    a = ap.parse_args()
    work = Path(a.work)
    if a.report:
        text = Path(a.report).read_text()
        runs = json.loads(text) if text.startswith("[") else map(json.loads, text.splitlines())
        report([Result(**run) for run in runs], work, Path(a.chart))
        return
    if len(os.sched_getaffinity(0)) < 2 and "pinned" in a.setups:
        sys.exit("the pinned setup needs at least 2 cores (trainer on one, the rest on others)")
    b = Bench(a)
    b.start_store()
    log = work / "results.jsonl"
    log.unlink(missing_ok=True)
    try:
        results = b.run(log)
    finally:
        assert b.minio is not None
        b.minio.stop()
    report(results, work, Path(a.chart))


def report(results: list[Result], work: Path, chart_path: Path) -> None:
    rows = summarize(results)
    md = table(rows)
    (work / "table.md").write_text(md)
    print(md)
    chart(rows, chart_path)
    print(f"chart: {chart_path}; every run: {work / 'results.jsonl'}")


if __name__ == "__main__":
    main()
